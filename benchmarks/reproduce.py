"""Re-run `dynaqa eval --subnet ID` for every shipped score and compare, to 0.1 F1.

The shipped checkpoint carries these eval-split scores: profile.json's fronts (`pareto` and
`pareto_fbgemm`, searched with INT8 on oneDNN's and FBGEMM's kernel, and `pareto_float`, searched
without; what the service reports as expected F1) and training.json's grid_scores (the width x
depth table of the README). This runs the public command, in a fresh process per configuration,
and writes benchmarks/results/reproduce.md (or --out); the exit status is 1 if any score is off
by more than 0.1. By default it checks the float front and this CPU's kernel's INT8 front: INT8
scores depend on the kernel's weight bits, and oneDNN's whole-split evals take minutes each on
a CPU without its integer kernel (`DYNAQA_INT8_KERNEL=fbgemm` re-scores FBGEMM's front on any x86).

`--update` writes the measured scores back into profile.json (after a change to the model's
arithmetic, e.g. how Drop-and-Restore ranks tokens), so the service never reports a stale F1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from models.infer import checkpoint as ckpt
from models.infer.quantize import KERNEL_ENV, int8_enabled, int8_kernel

RESULTS = Path(__file__).resolve().parent / "results"
TOLERANCE = 0.1


def evaluate(checkpoint_dir: Path, subnet_id: str, kernel: str | None = None) -> dict:
    """`dynaqa eval --subnet ID` in a fresh process; INT8 on `kernel` where given (else this CPU's)."""
    command = [sys.executable, "-m", "service.cli", "eval", "--checkpoint", str(checkpoint_dir), "--subnet", subnet_id]
    env = {**os.environ, KERNEL_ENV: kernel} if kernel else None
    out = subprocess.run([*command, "--quiet"], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ckpt.DEFAULT_DIR))
    parser.add_argument("--grid", action="store_true", help="also the 12 width x depth pairs of grid_scores")
    parser.add_argument(
        "--fronts",
        default=None,
        help="comma-separated keys of profile.json (default: the float front and the INT8 one searched on this "
        "CPU's kernel; another kernel's INT8 scores differ by tenths of a point)",
    )
    parser.add_argument("--out", default=str(RESULTS / "reproduce.md"), help="the markdown table to write")
    parser.add_argument("--subnets", default=None, help="only these ids, comma-separated (default: every claim)")
    parser.add_argument(
        "--update", action="store_true", help="write the measured F1 and EM of the fronts' entries into profile.json"
    )
    args = parser.parse_args(argv)
    checkpoint = ckpt.load(args.checkpoint)
    fronts = {key: checkpoint.fronts.get(key, []) for key in ckpt.FRONT_KEYS.values()}
    own = [ckpt.FRONT_KEYS[int8_kernel()]] if int8_enabled("auto") else []
    chosen = args.fronts.split(",") if args.fronts else [ckpt.FRONT_KEYS[None], *own]
    if unknown := set(chosen) - set(fronts):
        parser.error(f"--fronts: unknown {sorted(unknown)}; choose from {sorted(fronts)}")
    claims = [(name, e.subnet.id, e.f1) for name in chosen for e in fronts[name]]
    if args.grid:
        claims += [("grid", i, f1) for i, f1 in checkpoint.training.get("grid_scores", {}).items()]
    if args.subnets:
        claims = [c for c in claims if c[1] in args.subnets.split(",")]
    lines = ["| source | config | shipped F1 | `dynaqa eval` F1 | difference |", "|---|---|---:|---:|---:|"]
    worst = 0.0
    kernels = {key: kernel for kernel, key in ckpt.FRONT_KEYS.items()}
    measured_by: dict[tuple[str | None, str], dict] = {}  # (INT8 kernel, id): a grid pair on a front runs once
    for source, subnet_id, shipped in claims:
        key = (kernels.get(source) if subnet_id.endswith("-q8") else None, subnet_id)
        if key not in measured_by:
            measured_by[key] = evaluate(checkpoint.path, subnet_id, key[0])
        measured = measured_by[key]["f1"]
        worst = max(worst, abs(measured - shipped))
        lines.append(f"| {source} | `{subnet_id}` | {shipped:.2f} | {measured:.3f} | {measured - shipped:+.3f} |")
        print(lines[-1], flush=True)
    lines += ["", f"largest difference: {worst:.3f} F1 (tolerance {TOLERANCE})"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    if args.update:
        update(checkpoint, [name for name in chosen if name in fronts], measured_by)
        return 0
    return 0 if worst <= TOLERANCE else 1


def update(checkpoint: ckpt.Checkpoint, keys: list[str], measured: dict[tuple[str | None, str], dict]) -> None:
    """Write each re-measured entry's F1 and EM into its front in profile.json; the rest stay."""
    kernels = {key: kernel for kernel, key in ckpt.FRONT_KEYS.items()}
    for key in keys:
        entries = []
        for e in checkpoint.fronts[key]:
            got = measured.get((kernels[key] if e.subnet.quantized else None, e.subnet.id))
            entries.append(replace(e, f1=got["f1"], exact_match=got["exact_match"]) if got else e)
        ckpt.write_profile(checkpoint.path, entries, kernels[key])


if __name__ == "__main__":
    raise SystemExit(main())
