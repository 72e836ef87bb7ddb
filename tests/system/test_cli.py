"""The `dynaqa` command as a user runs it: JSON out, clear errors, exit status 2, no tracebacks."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DATA

pytestmark = pytest.mark.slow  # every test starts `dynaqa` processes

EVAL = str(DATA / "eval.json.gz")


def dynaqa(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], capture_output=True, text=True, timeout=300)


def test_score_reproduces_the_reference() -> None:
    result = dynaqa("score", "--data", EVAL, "--predictions", str(DATA / "reference-predictions-eval.json"))
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout)
    assert (round(scores["exact_match"], 3), round(scores["f1"], 3), scores["n"]) == (84.657, 90.985, 2594)


def test_eval_prints_scores_subnet_macs_and_time(tiny_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred.json"
    result = dynaqa(
        "eval",
        "--checkpoint",
        str(tiny_checkpoint),
        "--data",
        EVAL,
        "--limit",
        "6",
        "--width",
        "0.5",
        "--depth",
        "0.5",
        "--lengths",
        "0.8,0.5",
        "--predictions-out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["n"] == 6 and 0 <= report["f1"] <= 100
    assert report["subnet"]["width"] == 0.5 and report["subnet"]["lengths"] == [0.8, 0.5]
    assert report["macs_per_window_mean"] > 0 and report["seconds"] > 0
    assert len(json.loads(out.read_text())) == 6
    assert "eval w50d50" in result.stderr  # the progress bar


def test_eval_in_bf16_answers_as_the_float_model_mostly(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """bf16 is measured, not served: its answers are the float model's but for near ties."""
    answers, reports = {}, {}
    for name, flags in (("float", ()), ("bf16", ("--bf16",))):
        out = tmp_path / f"{name}.json"
        args = ("--data", EVAL, "--limit", "6", "--predictions-out", str(out), *flags)
        result = dynaqa("eval", "--checkpoint", str(tiny_checkpoint), *args)
        assert result.returncode == 0, result.stderr
        reports[name], answers[name] = json.loads(result.stdout), json.loads(out.read_text())
    assert reports["float"]["precision"] == "float32" and reports["bf16"]["precision"] == "bf16"
    assert sum(answers["bf16"][q] == a for q, a in answers["float"].items()) >= 4


def test_info_prints_json(tiny_checkpoint: Path) -> None:
    result = dynaqa("info", str(tiny_checkpoint))
    assert result.returncode == 0 and json.loads(result.stdout)["architecture"]["num_hidden_layers"] == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--width", "0.3"], "width 0.3 is not one of"),
        (["--depth", "0.5", "--lengths", "0.5,0.8,0.4"], "non-increasing"),
        (["--lengths", "0.9,0.8"], "lengths has 2 entries but depth 1.0 keeps 4"),
        (["--lengths", "a,b"], "comma-separated"),
        (["--subnet", "w33d50"], "width 0.33 is not one of"),
        (["--subnet", "nonsense"], "not a sub-network id"),
        (["--subnet", "w50d50", "--width", "1"], "either --subnet or"),
        (["--layer-widths", "0.5,0.75"], "layer_widths has 2 entries but depth 1.0 keeps 4"),
        (["--layer-widths", "0.5,0.75,0.75,0.5", "--width", "1"], "must be the widest"),
        (["--layer-widths", "half"], "--layer-widths 'half' must be comma-separated"),
        (["--limit", "0"], "--limit must be positive"),
        (["--bf16", "--int8"], "no INT8 (-q8) form"),
    ],
)
def test_bad_sub_networks_get_a_clear_error(tiny_checkpoint: Path, args: list[str], message: str) -> None:
    result = dynaqa("eval", "--checkpoint", str(tiny_checkpoint), "--data", EVAL, "--limit", "2", *args)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_search_writes_its_report_into_a_new_directory_and_the_front_it_searched(
    tiny_checkpoint_copy: Path, tmp_path: Path
) -> None:
    """`dynaqa search --write-profile` end to end on a tiny study: the report and plot land in a
    --report directory that did not exist (session 15 lost an hour's report to the plot), and with
    --int8 off the front is written as `pareto_float`, the INT8 front kept."""
    root = tiny_checkpoint_copy
    int8_front = [{"width": 0.5, "depth": 1.0, "quantized": True, "f1": 1.0, "exact_match": 0.5, "macs": 10}]
    (root / "profile.json").write_text(json.dumps({"pareto": int8_front}))
    squad = json.loads(gzip.decompress((DATA / "eval.json.gz").read_bytes()))
    first, second = (squad["data"][i]["paragraphs"][0] for i in (0, 1))
    small = {
        "version": squad["version"],
        "data": [{"title": t, "paragraphs": [{**p, "qas": p["qas"][:3]}]} for t, p in (("t", first), ("u", second))],
    }
    data = tmp_path / "small.json"
    data.write_text(json.dumps(small))
    report = tmp_path / "new" / "report"
    common = ["--checkpoint", str(root), "--data", str(data), "--subset", "2", "--out", str(tmp_path / "runs")]
    result = dynaqa(
        "search", *common, "--trials", "3", "--report", str(report), "--write-profile", "--int8", "off", "--quiet",
        "--timing-rounds", "3",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = json.loads((report / "search.json").read_text())
    assert (report / "search.png").stat().st_size > 0 and written["front"] and written["timing_rounds"] == 3
    assert "median of 3 rounds" in (report / "search.md").read_text()
    # Claims chosen on the first article, read on the second (the search's subset lies in the first).
    assert written["heldout"]["questions"] == {"select": 3, "report": 3} and written["heldout"]["subset_in_select"]
    assert len(written["heldout"]["front"]) == len(written["front"])
    assert "heldout_speedup_within_1_f1" in written["checks"]
    assert "Claims on articles they were not chosen on" in (report / "search.md").read_text()
    profile = json.loads((root / "profile.json").read_text())
    assert profile["pareto"] == int8_front and profile["pareto_float"]
    assert not any(entry["quantized"] for entry in profile["pareto_float"])
    # Resumed with the default `--int8 auto`: the study keeps INT8 off, whatever this CPU's probe reads.
    result = dynaqa("search", *common, "--trials", "4", "--report", str(report), "--quiet")
    assert result.returncode == 0, result.stderr
    assert json.loads((report / "search.json").read_text())["int8_enabled"] is False


def test_corrupt_weights_and_bad_files_get_a_clear_error(tiny_checkpoint_copy: Path, tmp_path: Path) -> None:
    root = tiny_checkpoint_copy
    (root / "model.safetensors").write_bytes(b"garbage")
    for args, message in (
        (["info", str(root)], "model.safetensors is corrupt"),
        (["eval", "--checkpoint", str(root), "--data", EVAL], "model.safetensors is corrupt"),
        (["score", "--data", str(tmp_path / "missing.json"), "--predictions", EVAL], "does not exist"),
        (["score", "--data", EVAL, "--predictions", str(root / "vocab.txt")], "not readable JSON"),
    ):
        result = dynaqa(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_empty_question_in_data_is_named(tiny_checkpoint: Path, tmp_path: Path) -> None:
    data = {
        "data": [
            {"title": "t", "paragraphs": [{"context": "A cat.", "qas": [{"id": "1", "question": " ", "answers": []}]}]}
        ]
    }
    (tmp_path / "d.json").write_text(json.dumps(data))
    result = dynaqa("eval", "--checkpoint", str(tiny_checkpoint), "--data", str(tmp_path / "d.json"))
    assert result.returncode == 2 and "question is empty" in result.stderr


def test_search_refuses_zero_timing_rounds_before_loading_anything() -> None:
    result = dynaqa("search", "--timing-rounds", "0")
    assert result.returncode == 2 and "0 is not a whole number >= 1" in result.stderr


def test_help_explains_lengths() -> None:
    result = dynaqa("eval", "--help")
    assert result.returncode == 0 and "ratios of each input's" in result.stdout


def test_training_pauses_at_its_time_budget_and_runs_without_the_service(base_dir: Path, tmp_path: Path) -> None:
    """`python -m models.cli` (no web stack, as on a lent GPU machine), the base model from
    DYNAQA_BASE_MODEL instead of the PyPI package, and --max-minutes: exit status 3 with the
    state saved, then the same command finishes the stage."""
    base = tmp_path / "base"
    base.mkdir()
    for f in base_dir.iterdir():
        (base / f.name).symlink_to(f)
    out = tmp_path / "runs"
    command = [sys.executable, "-m", "models.cli", "train", "teacher", "--out", str(out), "--quiet"]
    command += ["--data", str(DATA / "train.json.gz"), "--limit-train", "6", "--batch-size", "2", "--max-steps", "3"]
    env = {**os.environ, "DYNAQA_BASE_MODEL": str(base)}

    def train(*extra: str, environ: dict[str, str] = env) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*command, *extra], capture_output=True, text=True, timeout=300, env=environ)

    paused = train("--max-minutes", "0")
    assert paused.returncode == 3, paused.stderr
    assert json.loads(paused.stdout)["paused"] == {"stage": "teacher", "step": 1, "of": 3}
    assert not (out / "1-teacher" / "training.json").exists() and (out / "1-teacher.work" / "state.pt").exists()
    finished = train()
    assert finished.returncode == 0, finished.stderr
    stage = json.loads((out / "1-teacher" / "training.json").read_text())["stages"][-1]
    assert stage["steps"] == 3 and '"event": "resumed", "step": 1' in finished.stderr
    command[command.index(str(out))] = str(tmp_path / "other")  # a stage still to run reads the base model
    missing = train(environ={**os.environ, "DYNAQA_BASE_MODEL": str(tmp_path / "nowhere")})
    assert missing.returncode == 2 and "DYNAQA_BASE_MODEL" in missing.stderr and "Traceback" not in missing.stderr
