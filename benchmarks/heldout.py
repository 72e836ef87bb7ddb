"""A finished search report's claims, chosen on one half of the eval articles and read on the other.

`dynaqa search` writes this judgement into every new report (`models.search.heldout`); this re-judges
a report already written (the shipped fronts) without searching again: it scores the full model and
every front point on both halves (one pass each: 5 min for 11 points on 2 cores) and takes the
speed-ups from the report. INT8 points run on the kernel the report was searched with (its
`int8_kernel`; F1 depends on the kernel, not the machine), not on this CPU's probe, which a busy
machine can tip to the other kernel; DYNAQA_INT8_KERNEL overrules it.

Writes heldout.md and heldout.json next to the report (or to --out).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from models.data import squad
from models.infer import checkpoint as ckpt
from models.infer.quantize import KERNEL_ENV
from models.infer.reader import Reader
from models.nn.subnet import SubnetConfig
from models.search import heldout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", required=True, help="a search report's search.json (its front and latencies)")
    parser.add_argument("--checkpoint", default=str(ckpt.DEFAULT_DIR))
    parser.add_argument("--data", default=str(squad.DEFAULT_EVAL), help="SQuAD eval JSON[.gz]")
    parser.add_argument("--out", default=None, help="folder for heldout.md/json (default: the report's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    source = Path(args.report)
    report = json.loads(source.read_text())
    with report_kernel(report.get("int8_kernel")):
        text = judge_report(args, source, report)
    print(text)
    return 0


def judge_report(args: argparse.Namespace, source: Path, report: dict[str, Any]) -> str:
    """Score the report's front on both halves, write heldout.{md,json}, return the markdown."""
    checkpoint = ckpt.load(args.checkpoint)
    front = [(SubnetConfig.from_dict(e), e["latency_ms"]) for e in report["front"]]  # ids alone miss -l/-v details
    for subnet, _ in front:
        checkpoint.check(subnet)
    latency = report["full_model"]["latency_ms"]
    subset = (report.get("subset_offset", 0), report["subset"]) if "subset" in report else None
    examples = squad.load_squad(args.data)
    result = heldout.judge(Reader(checkpoint), examples, front, latency, subset, not args.quiet)
    out = Path(args.out) if args.out else source.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.json").write_text(json.dumps({"report": str(source), **result}, indent=1) + "\n")
    text = f"Speed-ups from `{source}`. " + heldout.markdown(result)
    (out / "heldout.md").write_text(text)
    return text


@contextlib.contextmanager
def report_kernel(kernel: str | None) -> Iterator[None]:
    """DYNAQA_INT8_KERNEL set to the report's kernel inside the block, unless already set."""
    if not kernel or KERNEL_ENV in os.environ:
        yield
        return
    os.environ[KERNEL_ENV] = kernel
    try:
        yield
    finally:
        del os.environ[KERNEL_ENV]


if __name__ == "__main__":
    raise SystemExit(main())
