"""A front's claims chosen on one half of the eval articles and reported on the other.

The search ranks its front by whole-split F1 and "the best speed-up within 1 F1" read from the same
scores is chosen on the very questions it is reported on, which flatters it. Here the split is cut
by article (file order: the first half of the articles, which hold the search's subset, to select
on; the rest to report on); each claim's point is picked on the select half only and its F1 loss is
read on the unseen half. Latencies come from the front as timed; only the F1 side is re-judged. The
front itself was still chosen with whole-split F1, which the report text says.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tqdm import tqdm

from models.data import metric
from models.data.squad import SquadExample
from models.infer.reader import Reader
from models.nn.subnet import SubnetConfig

MARGINS = (1.0, 3.0)  # the issues' "within 1 F1" and "within 3 F1"


def article_halves(examples: Sequence[SquadExample]) -> tuple[list[SquadExample], list[SquadExample]]:
    """The examples of the first half of the articles, and of the rest (empty with one article)."""
    articles = sorted({e.article for e in examples})
    cut = set(articles[: len(articles) // 2]) if len(articles) > 1 else set(articles)
    return [e for e in examples if e.article in cut], [e for e in examples if e.article not in cut]


def half_f1(
    reader: Reader, examples: Sequence[SquadExample], halves: Sequence[Sequence[SquadExample]], subnet: SubnetConfig
) -> tuple[float, float]:
    """`subnet`'s F1 on each of the two `halves` of `examples`, from one pass over both."""
    answers, _ = reader.predict(list(examples), subnet, progress=False)
    predictions = {qid: a.text for qid, a in answers.items()}
    select, report = (metric.score({e.qid: e.answers for e in half}, predictions)["f1"] for half in halves)
    return select, report


def best_within(rows: Sequence[dict[str, Any]], margin: float) -> dict[str, Any] | None:
    """The fastest row whose select-half F1 is within `margin` of the full model's."""
    eligible = [r for r in rows if r["loss_select"] <= margin]
    return max(eligible, key=lambda r: r["speedup"]) if eligible else None


def judge(
    reader: Reader,
    examples: Sequence[SquadExample],
    front: Sequence[tuple[SubnetConfig, float]],
    full_latency_ms: float,
    subset: tuple[int, int] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """`front` as (configuration, latency ms) pairs, scored on both halves beside the full model;
    each claim of `MARGINS` chosen on the select half and its loss read on the report half.
    `subset` (offset, size): the questions the search ran its trials on, which should lie in the
    select half (recorded as `subset_in_select`; None where not known)."""
    select, report = article_halves(examples)
    chosen_on = {e.qid for e in select}
    subset_in_select = None if subset is None else all(e.qid in chosen_on for e in examples[subset[0] : sum(subset)])
    if not report:
        return {"questions": {"select": len(select), "report": 0}, "front": [], "claims": []}
    configs = [SubnetConfig(1.0, 1.0), *(subnet for subnet, _ in front)]
    bar = tqdm(configs, desc="held-out halves", disable=not progress)
    scores = {s: half_f1(reader, examples, (select, report), s) for s in bar}
    full = scores[configs[0]]
    rows = [
        {
            "id": subnet.id,
            "speedup": full_latency_ms / latency,
            "f1_select": scores[subnet][0],
            "f1_report": scores[subnet][1],
            "loss_select": full[0] - scores[subnet][0],
            "loss_report": full[1] - scores[subnet][1],
        }
        for subnet, latency in front
    ]
    claims = []
    for margin in MARGINS:  # decided on the unrounded numbers; rounded only for the report
        chosen = best_within(rows, margin) or {}
        claims.append(
            {
                "margin": margin,
                "id": chosen.get("id"),
                "speedup": _round(chosen.get("speedup")),
                "loss_report": _round(chosen.get("loss_report")),
                "holds_on_report": bool(chosen) and chosen["loss_report"] <= margin,
            }
        )
    return {
        "questions": {"select": len(select), "report": len(report)},
        "subset_in_select": subset_in_select,
        "full_model": {"f1_select": round(full[0], 2), "f1_report": round(full[1], 2)},
        "front": [{k: _round(v) for k, v in row.items()} for row in rows],
        "claims": claims,
    }


def _round(value: Any) -> Any:
    return round(value, 2) if isinstance(value, float) else value


def _claim_lines(result: dict[str, Any]) -> list[str]:
    """One markdown bullet per claim."""
    lines = []
    for c in result["claims"]:
        if c["id"] is None:
            lines.append(f"- within {c['margin']:g} F1 on the select half: no point")
            continue
        verdict = "holds" if c["holds_on_report"] else "does not hold"
        lines.append(
            f"- best speed-up within {c['margin']:g} F1, chosen on the select half: **{c['speedup']:.2f}x** "
            f"(`{c['id']}`); on the unseen half it loses {c['loss_report']:+.2f} F1: {verdict}"
        )
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The table of every front point on both halves, then the claims."""
    q = result["questions"]
    if not q["report"]:
        return f"Held-out claims: not judged ({q['select']} questions in one article: no half to report on).\n"
    if not result["front"]:
        return "Held-out claims: not judged (an empty front).\n"
    full = result["full_model"]
    subset = {
        True: "holding the search's subset",
        False: "NOT holding all of the search's subset: the report half was searched on too",
        None: "the search's subset not recorded",
    }[result.get("subset_in_select")]
    lines = [
        f"Eval split by article: the first half ({q['select']} questions, {subset}) to select on, the rest "
        f"({q['report']}) to report on. Which points are on the front was decided on whole-split F1, the "
        f"report half included; the claims below are chosen on the select half only. Full model F1: "
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
    return "\n".join([*lines, "", *_claim_lines(result)]) + "\n"
