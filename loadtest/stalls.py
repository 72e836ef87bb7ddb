"""Forward-pass stalls inside a real server: one sub-network, sequential questions, no load.

Starts `dynaqa serve` pinned to `--subnet` (with any `DYNAQA_*` settings given as KEY=VALUE),
sends the first `--questions` eval questions `--rounds` times, one at a time, and reads each
answer's model time from `Server-Timing`. A stall is a forward that took more than `--factor`
times the median. Prints the median, the stall count and the largest times as one JSON line.
Bounded: rounds x questions requests, loopback only.

    python -m loadtest.stalls --subnet w25d50-q8              # the service's defaults
    python -m loadtest.stalls --subnet w25d50-q8 threads=1    # one torch thread
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import httpx

from loadtest.processes import Server
from loadtest.service_bench import DATA, model_ms
from models.data import squad
from models.infer import checkpoint


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("settings", nargs="*", help="DYNAQA_* settings as key=value (e.g. threads=1)")
    parser.add_argument("--subnet", default="w25d50-q8", help="sub-network to pin (default w25d50-q8)")
    parser.add_argument("--questions", type=int, default=200, help="eval questions per round (default 200)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over the questions (default 2)")
    parser.add_argument("--factor", type=float, default=2.5, help="a stall: this many times the median")
    parser.add_argument("--checkpoint", default=str(checkpoint.DEFAULT_DIR))
    args = parser.parse_args(argv)
    try:
        settings = dict(item.split("=", 1) for item in args.settings)
    except ValueError:
        parser.error("settings are key=value")
    examples = squad.load_squad(DATA, limit=args.questions)
    tmp = Path(tempfile.mkdtemp(prefix="dynaqa-stalls-"))
    server = Server(
        Path(args.checkpoint), tmp / "server.jsonl", cache_dir=tmp / "cache", pin_subnet=args.subnet, **settings
    )
    times = []
    try:
        server.wait_ready()
        with httpx.Client(timeout=60) as client:
            for round_ in range(args.rounds + 1):  # the first round warms up, untimed
                for example in examples[: 5 if round_ == 0 else None]:
                    body = {"question": example.question, "context": example.context}
                    response = client.post(server.url + "/v1/qa", json=body)
                    response.raise_for_status()
                    if round_:
                        times.append(model_ms(response))
    finally:
        server.stop()
    median = statistics.median(times)
    report = {
        "subnet": args.subnet,
        "settings": settings,
        "forwards": len(times),
        "median_ms": round(median, 2),
        "stalls": sum(t > args.factor * median for t in times),
        "stall_factor": args.factor,
        "largest_ms": [round(t, 1) for t in sorted(times)[-5:]],
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
