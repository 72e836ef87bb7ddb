"""The full model on every runtime a CPU user could serve it with, timed side by side on this CPU.

Runtimes: transformers eager (fp32), dynaqa's full model (float; INT8 on each kernel this torch
has; bf16 linear maps), ONNX Runtime fp32 and INT8 of the same graph (`loadtest.onnx_model`: fused,
dynamically quantised), and OpenVINO bf16 where it is installed. Each runtime lives in its own
worker process (one runtime's thread pool, allocator or JIT state cannot slow another's), and the
workers take turns: for each token count, round after round in a shuffled order, each times
`--reps` batch-1 forwards of the same random tokens; the median over rounds of each round's
median is kept. Speed-ups are over ORT INT8 (the strongest static peer) and over transformers; logits
at 128 tokens are compared with dynaqa's float full model.

Writes runtimes.md, runtimes.json and runtimes.png to --out (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from models.infer.checkpoint import DEFAULT_DIR

RESULTS = Path(__file__).resolve().parent / "results"
Forward = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # ids, mask, types -> start logits
REFERENCE = "dynaqa-fp32"
BASELINES = ("ort-int8", "transformers-fp32")  # the speed-up columns: the strongest and the usual peer


def _torch_forward(model: Any, subnet: Any = None, hf: bool = False) -> Forward:
    import torch

    def forward(ids: np.ndarray, mask: np.ndarray, types: np.ndarray) -> np.ndarray:
        args = (torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(types))
        with torch.inference_mode():
            out = model(*args) if hf else model(*args, subnet)
        return out.start_logits.float().numpy()

    return forward


def _dynaqa(checkpoint: Path, precision: str) -> Forward:
    """The shipped checkpoint's full model: float, INT8 on one kernel (`q8-onednn`, `q8-fbgemm`),
    or bf16 (every weight and activation; the logits come back as float)."""
    from models.infer import checkpoint as ckpt
    from models.infer.packing import pack_widths
    from models.nn.subnet import SubnetConfig

    if precision == "bf16":
        return _torch_forward(ckpt.load(checkpoint, int8=False, bf16=True).model, SubnetConfig())
    loaded = ckpt.load(checkpoint, int8=False)
    if precision.startswith("q8-"):
        pack_widths(loaded.model, loaded.widths, int8=True, kernel=precision.removeprefix("q8-"))  # type: ignore[arg-type]
        return _torch_forward(loaded.model, SubnetConfig(quantized=True))
    return _torch_forward(loaded.model, SubnetConfig())


def _transformers(checkpoint: Path) -> Forward:
    from transformers import BertForQuestionAnswering

    from loadtest.peer import export_hf

    with tempfile.TemporaryDirectory() as hf_dir:
        export_hf(checkpoint, Path(hf_dir))
        model = BertForQuestionAnswering.from_pretrained(hf_dir).eval()
    return _torch_forward(model, hf=True)


def _ort(checkpoint: Path, precision: str, threads: int) -> Forward:
    from loadtest import onnx_model

    session = onnx_model.session(onnx_model.build(checkpoint)[precision], threads)  # type: ignore[index]
    return lambda ids, mask, types: onnx_model.logits(session, ids, mask, types)[0]


def _openvino(checkpoint: Path, threads: int) -> Forward:
    """OpenVINO on the same fused ONNX graph as ORT (its ONNX reader takes ORT's fused operators),
    compiled with a bf16 precision hint: on CPUs with AVX512-BF16 or AMX its matmuls run in bf16."""
    import openvino as ov

    from loadtest import onnx_model

    converted = ov.convert_model(str(onnx_model.build(checkpoint)["fp32"]))
    config = {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    compiled = ov.Core().compile_model(converted, "CPU", config)
    return lambda ids, mask, types: np.asarray(compiled((ids, mask, types))[0], dtype=np.float32)


def make_forward(name: str, checkpoint: Path, threads: int) -> Forward:
    """The forward of runtime `name` (see `RUNTIMES`)."""
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    if name == "transformers-fp32":
        return _transformers(checkpoint)
    if name.startswith("dynaqa-"):
        return _dynaqa(checkpoint, name.removeprefix("dynaqa-"))
    if name.startswith("ort-"):
        return _ort(checkpoint, name.removeprefix("ort-"), threads)
    if name == "openvino-bf16":
        return _openvino(checkpoint, threads)
    raise ValueError(f"unknown runtime {name!r}")


def available() -> list[str]:
    """The runtimes this machine can run: INT8 kernels this torch has, OpenVINO if installed."""
    import importlib.util

    from models.infer.quantize import available_kernels

    names = ["transformers-fp32", REFERENCE, "dynaqa-bf16", *(f"dynaqa-q8-{k}" for k in available_kernels())]
    names += ["ort-fp32", "ort-int8"]
    if importlib.util.find_spec("openvino") is not None:
        names.append("openvino-bf16")
    return names


def inputs(tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch 1 of random word pieces, the first fifth as the question segment."""
    ids = np.random.default_rng(tokens).integers(1000, 29000, (1, tokens)).astype(np.int64)
    types = np.zeros_like(ids)
    types[:, tokens // 5 :] = 1
    return ids, np.ones_like(ids), types


def worker(name: str, checkpoint: Path, threads: int) -> int:
    """Serve timing requests on stdin, one JSON line each, answering on the original stdout (what
    libraries print goes to stderr)."""
    answer: TextIO = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    forward = make_forward(name, checkpoint, threads)
    answer.write(json.dumps({"ready": name}) + "\n")
    for line in sys.stdin:
        asked = json.loads(line)
        batch = inputs(asked["tokens"])
        if asked.get("logits"):
            answer.write(json.dumps({"logits": forward(*batch)[0].tolist()}) + "\n")
            continue
        forward(*batch)  # a first call per shape allocates
        seconds = []
        for _ in range(asked["reps"]):
            began = time.perf_counter()
            forward(*batch)
            seconds.append(time.perf_counter() - began)
        answer.write(json.dumps({"ms": statistics.median(seconds) * 1000}) + "\n")
    return 0


class Worker:
    """One runtime's worker process."""

    def __init__(self, name: str, checkpoint: Path, threads: int) -> None:
        self.name = name
        command = [sys.executable, "-m", "benchmarks.runtimes", "--worker", name, "--checkpoint", str(checkpoint)]
        command += ["--threads", str(threads)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.ready = json.loads(self._line())

    def _line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"runtime {self.name} exited (code {self.process.wait()}); see its stderr above")
        return line

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return json.loads(self._line())  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def measure(workers: list[Worker], lengths: list[int], rounds: int, reps: int) -> dict[str, dict[int, float]]:
    """Median over `rounds` of each worker's median ms, the workers in a shuffled order each round."""
    samples: dict[str, dict[int, list[float]]] = {w.name: {t: [] for t in lengths} for w in workers}
    order, rng = list(workers), random.Random(0)
    for tokens in lengths:
        for r in range(rounds):
            print(f"{tokens} tokens, round {r + 1}/{rounds}", file=sys.stderr)
            rng.shuffle(order)
            for w in order:
                samples[w.name][tokens].append(w.ask(tokens=tokens, reps=reps)["ms"])
    return {name: {t: statistics.median(s) for t, s in by_t.items()} for name, by_t in samples.items()}


def logit_gaps(workers: list[Worker]) -> dict[str, float]:
    """Largest |start logit - the float full model's| at 128 tokens, per runtime."""
    logits = {w.name: np.array(w.ask(tokens=128, logits=True)["logits"]) for w in workers}
    return {name: float(np.abs(v - logits[REFERENCE]).max()) for name, v in logits.items()}


def report(ms: dict[str, dict[int, float]], gaps: dict[str, float], meta: dict[str, Any], out: Path) -> None:
    """runtimes.json, runtimes.md (ms, and speed-ups over each of `BASELINES` that ran), a PNG."""
    lengths = sorted(next(iter(ms.values())))
    baselines = [b for b in BASELINES if b in ms]
    columns = [f"{t} tokens ms" for t in lengths] + [f"vs {b} at {t}" for b in baselines for t in lengths]
    lines = [
        f"# Runtimes on this CPU: batch 1, {meta['threads']} threads, median of {meta['rounds']} rounds",
        "",
        f"CPU: {meta['cpu']}. Each runtime in its own process, turns alternating. Speed-up: the baseline's ms",
        f"over the runtime's. Logit gap: largest |start logit - {REFERENCE}| at 128 tokens.",
        "",
        "| runtime | " + " | ".join(columns) + " | logit gap |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for name, by_t in sorted(ms.items(), key=lambda kv: kv[1][lengths[-1]]):
        cells = [f"{by_t[t]:.2f}" for t in lengths] + [f"{ms[b][t] / by_t[t]:.2f}x" for b in baselines for t in lengths]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {gaps[name]:.4f} |")
    (out / "runtimes.md").write_text("\n".join(lines) + "\n")
    (out / "runtimes.json").write_text(json.dumps({"meta": meta, "ms": ms, "logit_gap": gaps}, indent=1) + "\n")
    _plot(ms, out / "runtimes.png", meta)


def _plot(ms: dict[str, dict[int, float]], path: Path, meta: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted(next(iter(ms.values())))
    names = sorted(ms, key=lambda n: ms[n][lengths[-1]])
    fig, axes = plt.subplots(1, len(lengths), figsize=(6 * len(lengths), 0.45 * len(names) + 1.5), squeeze=False)
    for ax, tokens in zip(axes[0], lengths):
        ax.barh(names, [ms[n][tokens] for n in names], color=["C0" if n.startswith("dynaqa") else "C7" for n in names])
        ax.set_title(f"{tokens} tokens, batch 1")
        ax.set_xlabel("ms per forward (median)")
        ax.invert_yaxis()
    fig.suptitle(f"The full model per runtime, {meta['threads']} threads, {meta['cpu']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(DEFAULT_DIR))
    parser.add_argument("--runtimes", default=None, help="comma-separated subset (default: every available one)")
    parser.add_argument("--lengths", default="128,384", help="token counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=7, help="turns per runtime and token count")
    parser.add_argument("--reps", type=int, default=10, help="forwards per turn (their median is the turn's)")
    parser.add_argument("--threads", type=int, default=2, help="intra-op threads of every runtime")
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    checkpoint = Path(args.checkpoint)
    if args.worker:
        return worker(args.worker, checkpoint, args.threads)
    names = args.runtimes.split(",") if args.runtimes else available()
    if REFERENCE not in names:
        names.append(REFERENCE)
    workers: list[Worker] = []
    try:
        for name in names:
            workers.append(Worker(name, checkpoint, args.threads))
        ms = measure(workers, [int(t) for t in args.lengths.split(",")], args.rounds, args.reps)
        gaps = logit_gaps(workers)
    finally:
        for w in workers:
            w.close()
    meta = {"cpu": cpu_name(), "threads": args.threads, "rounds": args.rounds, "reps": args.reps}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report(ms, gaps, meta, out)
    print((out / "runtimes.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
