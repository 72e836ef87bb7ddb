"""Tables and PNG plots from loadtest/results/loadtest.json, and the checks of issue #7."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by rank, rounded to 0.1; None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)


def summarise(rows: list[dict], seconds: float) -> dict:
    answered = [r for r in rows if r["status"] == 200]
    latencies = [r["latency_s"] * 1000 for r in answered]

    mix: dict[str, int] = {}
    for r in answered:
        if r["subnet"]:
            mix[r["subnet"]] = mix.get(r["subnet"], 0) + 1
    return {
        "sent": len(rows),
        "attainment": round(sum(r["met"] for r in rows) / len(rows), 4) if rows else None,
        "goodput_rps": round(sum(r["met"] for r in rows) / seconds, 2),
        "p50_ms": percentile(latencies, 0.5),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
        "served_f1": round(statistics.fmean(r["f1"] for r in answered), 2) if answered else None,
        "shed": sum(r["status"] == 503 for r in rows),
        "expired": sum(r["status"] == 504 for r in rows),
        "errors": sum(r["status"] not in (200, 503, 504) for r in rows),
        "subnet_mix": mix,
    }


def write(results: dict, out: Path) -> dict:
    capacity = results["capacity_rps"]
    servers = results["servers"]
    summary: dict = {"capacity_rps": capacity, "full_model_latency_ms": results["full_model_latency_ms"]}
    reference = results.get("reference_f1", {})
    columns = (
        "sent",
        "attainment",
        "goodput_rps",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "served_f1",
        "shed",
        "expired",
        "errors",
    )
    lines = [
        f"Full model: {results['full_model_latency_ms']:.1f} ms p50, capacity {capacity:.2f} req/s.",
        "",
        "| server | scenario | offered (x capacity) | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 3) + "|",
    ]

    def row(kind: str, scenario: str, factor: str, s: dict) -> str:
        return f"| {kind} | {scenario} | {factor} | " + " | ".join(str(s[c]) for c in columns) + " |"

    for kind, data in servers.items():
        summary[kind] = {"sweep": {}}
        for factor, rows in data["sweep"].items():
            summary[kind]["sweep"][factor] = summarise(rows, max((r["sent_at"] for r in rows), default=1.0) or 1.0)
            lines.append(row(kind, "sweep", factor, summary[kind]["sweep"][factor]))
        for factor in data.get("skipped", []):
            lines.append(f"| {kind} | sweep | {factor} | not offered: under 5% met at a lower load |" + " |" * 9)
        summary[kind]["mixed"] = summarise(data["mixed"], max(r["sent_at"] for r in data["mixed"]) or 1.0)
        lines.append(row(kind, "mixed", "1.0", summary[kind]["mixed"]))
    checks = _checks(summary, servers, reference)
    summary["checks"] = checks
    lines += ["", "Checks:", "", "```", json.dumps(checks, indent=1), "```"]
    (out / "loadtest.md").write_text("\n".join(lines) + "\n")
    (out / "loadtest-summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    _plots(servers, summary, out)
    return checks


def _checks(summary: dict, servers: dict, reference: dict) -> dict:
    """The issue's numbers. `reference`: the full model's F1 on each level's answered questions."""

    def best_load(kind: str) -> float:
        ok = [
            float(f)
            for f, s in summary[kind]["sweep"].items()
            if s["attainment"] is not None and s["attainment"] >= 0.99
        ]
        return max(ok, default=0.0)

    checks: dict = {}
    if "adaptive" in summary and "2.0" in summary["adaptive"]["sweep"]:
        adaptive = summary["adaptive"]["sweep"]["2.0"]
        checks["adaptive_attainment_at_2x"] = adaptive["attainment"]
        checks["adaptive_served_f1_at_2x"] = adaptive["served_f1"]
        if reference.get("2.0") is not None and adaptive["served_f1"] is not None:
            checks["full_model_f1_on_the_same_questions_at_2x"] = reference["2.0"]
            checks["adaptive_f1_below_full_model_at_2x"] = round(reference["2.0"] - adaptive["served_f1"], 2)
        if "pinned-full" in summary:
            sweep = summary["pinned-full"]["sweep"]
            # None when not offered 2x (it met under 5% at a lower load; see the table)
            checks["pinned_full_attainment_at_2x"] = sweep["2.0"]["attainment"] if "2.0" in sweep else None
            checks["pinned_full_f1_at_0.25x"] = sweep["0.25"]["served_f1"]
    for kind in summary:
        if isinstance(summary[kind], dict) and "sweep" in summary[kind]:
            checks[f"highest_load_99pct_{kind}"] = best_load(kind)
    if "adaptive" in summary and "ort-peer" in summary:
        sweep = summary["ort-peer"]["sweep"]
        checks["ort_peer_attainment_at_2x"] = sweep["2.0"]["attainment"] if "2.0" in sweep else None
        ort = best_load("ort-peer")
        # None when the peer held 99% at no offered load: the ratio has no finite value then
        checks["adaptive_over_ort_peer_highest_load_99pct"] = round(best_load("adaptive") / ort, 2) if ort else None
    burst = servers.get("adaptive", {}).get("burst")
    if burst and burst["levels"]:
        up, down = burst["phases"][1]["start_s"], burst["phases"][2]["start_s"]
        # Where the 1x phase settled: the mean level over its second half (the level is
        # fractional and moves with the measured arrival rate every second).
        settled = [level for t, level in burst["levels"] if up / 2 <= t < up]
        before = sum(settled) / len(settled) if settled else 0.0
        rose = [t for t, level in burst["levels"] if t >= up and level >= before + 1]
        checks["burst_level_rose_after_s"] = round(rose[0] - up, 2) if rose else None
        back = [t for t, level in burst["levels"] if t >= down and level == 0]
        later_nonzero = [t for t, level in burst["levels"] if back and t > back[0] and level > 0]
        checks["burst_full_quality_after_step_down_s"] = round(back[0] - down, 2) if back else None
        checks["burst_relapsed_after_recovery"] = bool(later_nonzero)
        # Full quality at 1x needs the full model at utilisation ~1, so also: how long until the
        # level is back where the first 1x phase had settled.
        again = [t for t, level in burst["levels"] if t >= down and level <= before]
        checks["burst_level_before_step_up"] = round(before, 2)
        checks["burst_back_to_that_level_after_s"] = round(again[0] - down, 2) if again else None
    return checks


def _plots(servers: dict, summary: dict, out: Path) -> None:
    """loadtest-sweep.png, loadtest-budgets.png and (with a burst run) loadtest-burst.png under `out`."""
    _plot_sweep(servers, summary, out)
    _plot_budgets(servers, out)
    burst = servers.get("adaptive", {}).get("burst")
    if burst:
        _plot_burst(burst, out)


def _plot_sweep(servers: dict, summary: dict, out: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for kind in servers:
        factors = sorted(summary[kind]["sweep"], key=float)
        axes[0].plot(
            [float(f) for f in factors], [summary[kind]["sweep"][f]["attainment"] for f in factors], "o-", label=kind
        )
        axes[1].plot(
            [float(f) for f in factors], [summary[kind]["sweep"][f]["served_f1"] for f in factors], "o-", label=kind
        )
    axes[0].set(
        xlabel="offered load (x full-model capacity)", ylabel="budgets met (share of sent)", title="Budget attainment"
    )
    axes[0].axhline(0.99, color="grey", lw=0.8, ls="--")
    axes[1].set(xlabel="offered load (x full-model capacity)", ylabel="F1 of answered requests", title="Served F1")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, out / "loadtest-sweep.png")


def _plot_budgets(servers: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for kind, data in servers.items():
        budgets = sorted({r["budget_ms"] for r in data["mixed"]})
        p99 = []
        for b in budgets:
            value = percentile(
                [r["latency_s"] * 1000 for r in data["mixed"] if r["budget_ms"] == b and r["status"] == 200], 0.99
            )
            p99.append(float("nan") if value is None else value)
        ax.plot(budgets, p99, "o-", label=f"{kind} p99")
    lim = max(r["budget_ms"] for d in servers.values() for r in d["mixed"])
    ax.plot([0, lim], [0, lim], color="grey", ls="--", lw=0.8, label="latency = budget")
    ax.set(xlabel="budget (ms)", ylabel="latency (ms)", title="Latency p99 vs budget (mixed budgets, 1x load)")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, out / "loadtest-budgets.png")


def _plot_burst(burst: dict, out: Path) -> None:
    fig, ax = plt.subplots(figsize=(10, 4))
    rows = [r for phase in burst["phases"] for r in phase["records"]]
    ax.scatter(
        [r["sent_at"] for r in rows],
        [r["latency_s"] * 1000 for r in rows],
        s=3,
        c=["tab:green" if r["met"] else "tab:red" for r in rows],
    )
    ax.set(xlabel="time (s)", ylabel="latency (ms)", title="Burst 1x -> 3x -> 1x (adaptive): latency and degradation")
    twin = ax.twinx()
    twin.step([t for t, _ in burst["levels"]], [lvl for _, lvl in burst["levels"]], where="post", color="tab:blue")
    twin.set_ylabel("degradation level", color="tab:blue")
    for phase in burst["phases"][1:]:
        ax.axvline(phase["start_s"], color="grey", ls="--", lw=0.8)
    _save(fig, out / "loadtest-burst.png")


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "results" / "loadtest.json"
    print(json.dumps(write(json.loads(path.read_text()), path.parent), indent=1))
