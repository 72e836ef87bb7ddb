"""One fresh adaptive server, a sequence of open-loop load phases, one line of numbers per phase.

For tuning the service rather than proving it (that is `loadtest.scenarios`): each phase is
FACTOR:SECONDS of Poisson arrivals at FACTOR x the full model's capacity, budgets 2/3/5 x its
latency (the sweep's), straight after the one before on the same server, so a phase also shows
what the previous one left behind (a margin, a level, a backlog). Server settings go as
KEY=VALUE pairs (DYNAQA_* without the prefix). Prints, per phase: attainment, served F1, the
sub-network mix per budget, the answers that missed their budget, and at the end the re-plan,
margin and level metrics. The server runs on all cores but the last, the generator on the last.

    python -m loadtest.phases 1:10,2:60                    # a fresh server, then 2x for a minute
    python -m loadtest.phases 2:60 target_busy=0.75        # the same load with a setting changed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections import Counter
from pathlib import Path

import httpx

from loadtest import openloop
from loadtest.processes import Server, split_cores
from loadtest.scenarios import DATA, SWEEP_BUDGETS, score
from models.data import squad
from models.infer import checkpoint

METRICS = ("dynaqa_replans_total", "dynaqa_plan_margin_seconds", "dynaqa_degradation_level ")


def phase_report(factor: float, rows: list[dict]) -> dict:
    """Attainment, served F1 and the sub-network mix of one phase's scored records."""
    f1 = [r["f1"] for r in rows if r["f1"] is not None]
    mix: dict[int, Counter[str]] = {}
    for r in rows:
        mix.setdefault(round(r["budget_ms"]), Counter())[r["subnet"]] += 1
    return {
        "factor": factor,
        "sent": len(rows),
        "attainment": round(sum(r["met"] for r in rows) / len(rows), 4) if rows else None,
        "served_f1": round(sum(f1) / len(f1), 2) if f1 else None,
        "mix_by_budget_ms": {budget: dict(c.most_common()) for budget, c in sorted(mix.items())},
        "missed": [
            {
                "at_s": round(r["sent_at"], 2),
                "ms": round(r["latency_s"] * 1000, 1),
                "budget_ms": round(r["budget_ms"], 1),
                "subnet": r["subnet"],
                "status": r["status"],
            }
            for r in rows
            if not r["met"]
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("phases", help="comma-separated FACTOR:SECONDS, e.g. 1:10,2:60")
    parser.add_argument("settings", nargs="*", help="server settings as KEY=VALUE (DYNAQA_KEY)")
    parser.add_argument("--checkpoint", default=str(checkpoint.DEFAULT_DIR))
    parser.add_argument(
        "--latency-ms", type=float, default=55.0, help="L: budgets are 2/3/5 x L (make loadtest measures it)"
    )
    parser.add_argument("--capacity", type=float, default=15.3, help="the full model's requests per second")
    parser.add_argument(
        "--seed", type=int, default=None, help="arrivals' seed; default: 100 x the factor, as the sweep"
    )
    args = parser.parse_args(argv)
    phases = [(float(f), float(s)) for f, s in (p.split(":") for p in args.phases.split(","))]
    settings = dict(kv.split("=", 1) for kv in args.settings)
    cpus = split_cores()
    examples = squad.load_squad(DATA)
    gold = {e.qid: e.answers for e in examples}
    tmp = Path(tempfile.mkdtemp(prefix="dynaqa-phases-"))
    # The service's default cache: from the second run on, calibration is read back, as a
    # restarted replica's would be, and nothing warms the model but the service's own start-up.
    server = Server(Path(args.checkpoint), tmp / "server.jsonl", cpus, threads=1, **settings)
    try:
        server.wait_ready()
        for factor, seconds in phases:
            seed = args.seed if args.seed is not None else int(factor * 100)
            records = asyncio.run(
                openloop.run(
                    server.url,
                    examples,
                    args.capacity * factor,
                    seconds,
                    lambda rng: args.latency_ms * rng.choice(SWEEP_BUDGETS),
                    seed=seed,
                )
            )
            print(json.dumps(phase_report(factor, score(records, gold))))
        text = httpx.get(server.url + "/metrics").text
        print(
            json.dumps(
                {line.split()[0]: float(line.split()[-1]) for line in text.splitlines() if line.startswith(METRICS)}
            )
        )
    finally:
        server.stop()
    print(json.dumps({"server_log": str(tmp / "server.jsonl")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
