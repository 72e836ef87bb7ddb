"""`dynaqa search`: the F1/latency frontier of a checkpoint on this CPU, reported and optionally
written into the checkpoint's profile.json for the service."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from models.cli.options import add_compiled, emit, positive_int
from models.data import squad
from models.infer import checkpoint as ckpt


def cmd_search(args: argparse.Namespace) -> None:
    from models.hardware import hardware_id
    from models.infer.quantize import int8_enabled, int8_kernel, int8_speedup
    from models.infer.reader import Reader
    from models.search import report, study, timing

    database = Path(args.out) / "search.db"
    storage = args.storage or f"sqlite:///{database}"
    existing = args.storage is not None or database.exists()  # nothing is created before the checkpoint loads
    resumed = study.recorded_int8(storage, args.study) if args.int8 == "auto" and existing else None
    int8 = int8_enabled(args.int8) if resumed is None else resumed
    checkpoint = ckpt.load(args.checkpoint, compiled=args.compiled, int8=int8)
    reader = Reader(checkpoint)
    examples = squad.load_squad(args.data)
    bench = timing.Bench(reader, examples[args.subset_offset : args.subset_offset + args.subset])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    searched = study.run_study(bench, args.trials, storage, args.seed, args.study, not args.quiet, int8)
    trials = study.measurements(searched)
    settings: dict[str, Any] = {
        "subset": args.subset,
        "subset_offset": args.subset_offset,
        "seed": args.seed,
        "storage": storage,
        "hardware": hardware_id(),
        "int8_speedup": round(int8_speedup(), 3),
        "int8_kernel": int8_kernel(),
        "int8_enabled": int8,
        "timing_rounds": args.timing_rounds or timing.TIMING_ROUNDS,
    }
    if not int8:
        why = "the resumed study started without INT8" if resumed is False else f"--int8 {args.int8}"
        settings["int8_why"] = (
            f"{why}; one INT8 linear map runs at {settings['int8_speedup']}x the float one on this CPU"
        )
    scored = study.StudyScores(searched, examples, compiled=args.compiled)
    shown, entries, fronts = report.build(reader, bench, examples, trials, settings, not args.quiet, scored)
    report.plot(fronts, trials, Path(args.report) / "search.png", int8)
    report.write(shown, Path(args.report))
    if args.write_profile:
        ckpt.write_profile(checkpoint.path, entries, int8_kernel() if int8 else None)
    emit({**shown, "profile_written": bool(args.write_profile), "report": args.report})


def add(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register `search`."""
    p = sub.add_parser(
        "search",
        help="search the F1/latency frontier over width x depth x lengths",
        description="NSGA-II (Optuna) over width (narrowed per layer), depth and per-layer keep ratios, maximising "
        "F1 on a fixed "
        "subset of the eval split and minimising measured batch-1 latency on this CPU. Resumable: the same "
        "--storage and --study continue where a run stopped, trials and the report's whole-split scores alike. "
        "The front is re-scored on the whole split and, "
        "with --write-profile, written to the checkpoint's profile.json for the service. The report's "
        "claims (best speed-up within 1 and 3 F1) are also chosen on the first half of the articles and "
        "read on the rest, which they were not chosen on.",
    )
    p.add_argument("--checkpoint", default=None, help="checkpoint directory (default: the shipped one)")
    p.add_argument("--data", default=str(squad.DEFAULT_EVAL), help="SQuAD eval JSON[.gz]")
    p.add_argument("--trials", type=int, default=150, help="total trials in the study (default 150)")
    p.add_argument("--subset", type=int, default=300, help="questions per trial (default 300)")
    p.add_argument("--subset-offset", type=int, default=0, help="where the subset starts in the file")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--study", default="dynaqa", help="study name in the storage")
    p.add_argument("--storage", default=None, help="Optuna storage URL (default sqlite in --out)")
    p.add_argument("--out", default="runs/search", help="directory for the study's sqlite storage")
    p.add_argument("--report", default="benchmarks/results", help="where search.md, search.json and search.png go")
    _add_output_flags(p)
    p.add_argument("--quiet", action="store_true")
    add_compiled(p)
    p.set_defaults(func=cmd_search)


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    """Where the front goes, what the space holds, and how the front is timed again."""
    p.add_argument(
        "--write-profile",
        action="store_true",
        help="write the front into the checkpoint's profile.json: with INT8 in the space as the front of the "
        "kernel it ran on ('pareto' for oneDNN, 'pareto_fbgemm' for FBGEMM), without as 'pareto_float' (what the "
        "service serves on CPUs where INT8 does not pay); the others are kept",
    )
    p.add_argument(
        "--int8",
        choices=["auto", "on", "off"],
        default="auto",
        help="INT8 configurations in the space: auto (only where this CPU's INT8 kernel is at least 1.1x the "
        "float matmul: oneDNN's where it pays, else FBGEMM's, which the probe reads at 1.16-1.6x on AVX2; a study "
        "being resumed keeps the choice it started with), on, or off",
    )
    p.add_argument(
        "--timing-rounds",
        type=positive_int,
        default=None,
        help="side-by-side rounds when the front and the full model are timed again (median kept; default 3, "
        "as the shipped fronts were timed). Each round times every point of the pool on the whole subset, "
        "in turns of 10 questions per configuration: about 4 min per round for 16 points on a 2-core AVX2 "
        "machine",
    )
