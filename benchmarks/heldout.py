"""The shipped front's claims, chosen on one half of the eval articles and reported on the other.

`dynaqa search` picks configurations on a 200-question subset and ranks the front by whole-split F1,
so "the best speed-up within 1 F1" is chosen on the very questions it is reported on, which
flatters it. This splits the eval split by article (file order: the first half of the articles,
which hold the search's subset, to select on; the rest to report on), scores the full model and
every point of a search report's front on both halves, picks each claim's point on the select half
only and reports its F1 loss on the unseen half. Latencies and speed-ups are the report's own
(side by side with the full model); only the F1 side is re-judged. The front's membership was still
decided with whole-split F1: see docs/search.md.

Writes heldout.md and heldout.json next to the search report (or to --out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tqdm import tqdm

from models.data import metric, squad
from models.infer import checkpoint as ckpt
from models.infer.reader import Reader
from models.nn.subnet import SubnetConfig

MARGINS = (1.0, 3.0)  # the "within 1 F1" and "within 3 F1"


def article_halves(path: Path | str) -> tuple[set[str], set[str]]:
    """Question ids of the first half of the articles (file order) and of the rest."""
    articles = squad.read_json(path)["data"]
    cut = len(articles) // 2
    halves: tuple[set[str], set[str]] = (set(), set())
    for i, article in enumerate(articles):
        for paragraph in article["paragraphs"]:
            halves[i >= cut].update(qa["id"] for qa in paragraph["qas"])
    return halves


def half_scores(
    reader: Reader, examples: list[squad.SquadExample], subnet: SubnetConfig, halves: tuple[set[str], set[str]]
) -> tuple[float, float]:
    """F1 of `subnet` on the select half and on the report half (one pass over both)."""
    answers, _ = reader.predict(examples, subnet, progress=False)
    predictions = {qid: a.text for qid, a in answers.items()}
    return tuple(  # type: ignore[return-value]
        metric.score({e.qid: e.answers for e in examples if e.qid in half}, predictions)["f1"] for half in halves
    )


def best_within(rows: list[dict[str, Any]], margin: float) -> dict[str, Any] | None:
    """The fastest row whose select-half F1 is within `margin` of the full model's."""
    eligible = [r for r in rows if r["loss_select"] <= margin]
    return max(eligible, key=lambda r: r["speedup"]) if eligible else None


def judge(report: dict[str, Any], checkpoint: ckpt.Checkpoint, data: Path, progress: bool = True) -> dict[str, Any]:
    """Every front point's F1 on both halves, and each claim chosen on one and reported on the other."""
    examples = squad.load_squad(data)
    halves = article_halves(data)
    reader = Reader(checkpoint)
    full_latency = report["full_model"]["latency_ms"]
    ids = [e["id"] for e in report["front"]]
    scores = {}
    for subnet_id in tqdm(["w100d100", *ids], desc="both halves", unit="config", disable=not progress):
        scores[subnet_id] = half_scores(reader, examples, checkpoint.resolve(subnet_id), halves)
    full = scores["w100d100"]
    rows = [
        {
            "id": e["id"],
            "speedup": round(full_latency / e["latency_ms"], 2),
            "f1_select": round(scores[e["id"]][0], 2),
            "f1_report": round(scores[e["id"]][1], 2),
            "loss_select": round(full[0] - scores[e["id"]][0], 2),
            "loss_report": round(full[1] - scores[e["id"]][1], 2),
        }
        for e in report["front"]
    ]
    claims = []
    for margin in MARGINS:
        chosen = best_within(rows, margin)
        claims.append(
            {
                "margin": margin,
                "id": chosen and chosen["id"],
                "speedup": chosen and chosen["speedup"],
                "loss_report": chosen and chosen["loss_report"],
                "holds_on_report": bool(chosen and chosen["loss_report"] <= margin),
            }
        )
    questions = [len(h) for h in halves]
    return {
        "questions": {"select": questions[0], "report": questions[1]},
        "full_model": {"f1_select": round(full[0], 2), "f1_report": round(full[1], 2), "latency_ms": full_latency},
        "front": rows,
        "claims": claims,
    }


def markdown(result: dict[str, Any], source: str) -> str:
    q, full = result["questions"], result["full_model"]
    lines = [
        f"Eval split by article: the first half ({q['select']} questions, holding the search's subset) to "
        f"select on, the rest ({q['report']}) to report on. Speed-ups from `{source}`. Full model F1: "
        f"{full['f1_select']:.2f} (select) / {full['f1_report']:.2f} (report).",
        "",
        "| config | speed-up | F1 select | F1 report | loss select | loss report |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["front"]:
        lines.append(
            f"| `{r['id']}` | {r['speedup']:.2f}x | {r['f1_select']:.2f} | {r['f1_report']:.2f} "
            f"| {r['loss_select']:+.2f} | {r['loss_report']:+.2f} |"
        )
    lines.append("")
    for c in result["claims"]:
        if c["id"] is None:
            lines.append(f"- within {c['margin']:g} F1 on the select half: no point")
            continue
        verdict = "holds" if c["holds_on_report"] else "does not hold"
        lines.append(
            f"- best speed-up within {c['margin']:g} F1, chosen on the select half: **{c['speedup']:.2f}x** "
            f"(`{c['id']}`); on the unseen half it loses {c['loss_report']:+.2f} F1: {verdict}"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--report", required=True, help="a search report's search.json (its front and latencies)")
    parser.add_argument("--checkpoint", default=str(ckpt.DEFAULT_DIR))
    parser.add_argument("--data", default=str(squad.DEFAULT_EVAL), help="SQuAD eval JSON[.gz]")
    parser.add_argument("--out", default=None, help="folder for heldout.md/json (default: the report's)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    source = Path(args.report)
    result = judge(json.loads(source.read_text()), ckpt.load(args.checkpoint), Path(args.data), not args.quiet)
    out = Path(args.out) if args.out else source.parent
    out.mkdir(parents=True, exist_ok=True)
    (out / "heldout.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "heldout.md").write_text(markdown(result, str(source)))
    print(markdown(result, str(source)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
