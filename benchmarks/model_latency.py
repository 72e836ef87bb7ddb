"""Latency of every width x depth pair and a few length settings on this CPU.

For batch 1 and 8 at 128 and 384 tokens, every configuration is timed in interleaved rounds
(each round visits all configurations in a shuffled order, so drift and background load hit all
of them alike) and the median per-forward time is kept. Writes a markdown table, a JSON file and a
PNG of latency vs MACs to benchmarks/results/, and prints the two speed-up checks of issue #2:
width 0.25 x depth 0.5 vs the full model, and what halving the tokens at every layer adds on top
of each width x depth pair (batch 1, 384 tokens).

`make bench` runs it with OMP_WAIT_POLICY=ACTIVE: small sub-networks issue many short ops, and a
sleeping OpenMP worker takes long enough to wake that it erases part of the saving (recorded in
the JSON as `omp_wait_policy`).

Length settings are keep ratios per kept layer: "0.8x" keeps 0.8 of the previous layer's tokens
at every layer (LAT's smallest LengthDrop sub-model), "halve" keeps half at every layer.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from models.infer.checkpoint import DEFAULT_DIR
from models.infer.checkpoint import load as load_checkpoint
from models.infer.packing import pack_widths
from models.nn.bert_weights import base_model_dir, from_bert
from models.nn.cost import macs
from models.nn.subnet import WIDTHS, SubnetConfig, grid, kept_layer_count
from models.nn.transformer import DynamicBertForQA

RESULTS = Path(__file__).resolve().parent / "results"
LENGTH_SETTINGS = {"full": None, "0.8x": 0.8, "halve": 0.5}


def length_variant(subnet: SubnetConfig, factor: float | None, layers: int) -> SubnetConfig:
    if factor is None:
        return subnet
    kept = kept_layer_count(layers, subnet.depth)
    return SubnetConfig(subnet.width, subnet.depth, tuple(factor ** (i + 1) for i in range(kept)))


def load_model(path: str | None) -> tuple[DynamicBertForQA, str]:
    if path or (DEFAULT_DIR / "config.json").exists():
        checkpoint = load_checkpoint(path)
        return checkpoint.model, str(checkpoint.path)
    model = from_bert(base_model_dir()).eval()
    pack_widths(model, WIDTHS)
    return model, "MiniLM-L6-H384 base weights (untrained span head; latency does not depend on values)"


def time_configs(
    model: DynamicBertForQA, configs: list[SubnetConfig], batch: int, tokens: int, rounds: int, seed: int
) -> dict[SubnetConfig, float]:
    """Median seconds per forward for each config, from interleaved rounds."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 29000, (batch, tokens), generator=g)
    mask = torch.ones_like(ids)
    types = torch.zeros_like(ids)
    types[:, tokens // 5 :] = 1
    samples: dict[SubnetConfig, list[float]] = {c: [] for c in configs}
    order = list(configs)
    rng = random.Random(seed)
    with torch.inference_mode():
        for subnet in configs:  # warm-up: first call of each shape allocates
            model(ids, mask, types, subnet)
        for _ in range(rounds):
            rng.shuffle(order)
            for subnet in order:
                began = time.perf_counter()
                model(ids, mask, types, subnet)
                samples[subnet].append(time.perf_counter() - began)
    return {c: statistics.median(s) for c, s in samples.items()}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({(r["batch"], r["tokens"]) for r in rows})
    fig, axes = plt.subplots(1, len(settings), figsize=(5 * len(settings), 4.2), squeeze=False)
    markers = {"full": "o", "0.8x": "s", "halve": "^"}
    for ax, (batch, tokens) in zip(axes[0], settings):
        for name, marker in markers.items():
            pts = [r for r in rows if r["batch"] == batch and r["tokens"] == tokens and r["lengths"] == name]
            ax.scatter([r["gmacs"] for r in pts], [r["ms"] for r in pts], marker=marker, label=f"lengths {name}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"batch {batch}, {tokens} tokens")
        ax.set_xlabel("GMACs per input")
        ax.set_ylabel("latency per forward (ms)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend()
    fig.suptitle("dynaqa sub-networks on this CPU: latency vs MACs (median of interleaved rounds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def measure(model: DynamicBertForQA, rounds: int) -> list[dict[str, Any]]:
    """One row per configuration, batch and token count: its MACs and median latency."""
    layers = model.config.num_hidden_layers
    configs = [length_variant(s, f, layers) for s in grid() for f in LENGTH_SETTINGS.values()]
    names = {length_variant(s, f, layers): n for s in grid() for n, f in LENGTH_SETTINGS.items()}
    rows = []
    for batch in (1, 8):
        for tokens in (128, 384):
            batch_rounds = rounds if batch == 1 else max(3, rounds // 3)
            print(f"timing batch {batch}, {tokens} tokens, {batch_rounds} rounds ...", file=sys.stderr)
            medians = time_configs(model, configs, batch, tokens, batch_rounds, seed=batch * 1000 + tokens)
            for subnet, seconds in medians.items():
                rows.append(
                    {
                        "batch": batch,
                        "tokens": tokens,
                        "width": subnet.width,
                        "depth": subnet.depth,
                        "lengths": names[subnet],
                        "id": subnet.id,
                        "gmacs": macs(model.config, subnet, tokens) / 1e9,
                        "ms": seconds * 1000,
                    }
                )
    return rows


def ms_of(rows: list[dict[str, Any]], batch: int, tokens: int, width: float, depth: float, lengths: str) -> float:
    """The measured latency of one setting."""
    return next(
        r["ms"]
        for r in rows
        if (r["batch"], r["tokens"], r["width"], r["depth"], r["lengths"]) == (batch, tokens, width, depth, lengths)
    )


def checks(rows: list[dict[str, Any]], threads: int, source: str) -> dict[str, Any]:
    """Issue #2's two speed-up checks at batch 1 and 384 tokens, and how they were measured."""
    full = ms_of(rows, 1, 384, 1.0, 1.0, "full")
    smallest_speedup = full / ms_of(rows, 1, 384, 0.25, 0.5, "full")
    halving = {
        s.id: ms_of(rows, 1, 384, s.width, s.depth, "full") / ms_of(rows, 1, 384, s.width, s.depth, "halve")
        for s in grid()
    }
    return {
        "full_model_ms_b1_384": round(full, 2),
        "speedup_w25d50_vs_full_b1_384": round(smallest_speedup, 2),
        "halving_speedup_min_over_pairs_b1_384": round(min(halving.values()), 2),
        "halving_speedup_per_pair_b1_384": {k: round(v, 2) for k, v in halving.items()},
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "model": source,
        "padding": "none: every input is exactly `tokens` real tokens",
    }


def markdown(rows: list[dict[str, Any]], model: DynamicBertForQA) -> str:
    """The batch-1 table of every width x depth pair with and without halving, then every row."""
    layers = model.config.num_hidden_layers
    full = ms_of(rows, 1, 384, 1.0, 1.0, "full")
    lines = [
        "## Batch 1, 384 tokens: every width x depth pair, and what halving the tokens adds",
        "",
        "| width | depth | GMACs | ms | vs full | halve: GMACs | halve: ms | halving adds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in grid():
        plain, halved = ms_of(rows, 1, 384, s.width, s.depth, "full"), ms_of(rows, 1, 384, s.width, s.depth, "halve")
        lines.append(
            f"| {s.width} | {s.depth} | {macs(model.config, s, 384) / 1e9:.2f} | {plain:.1f} | {full / plain:.2f}x | "
            f"{macs(model.config, length_variant(s, 0.5, layers), 384) / 1e9:.2f} | {halved:.1f} | "
            f"{plain / halved:.2f}x |"
        )
    lines += [
        "",
        "## All settings",
        "",
        "| batch | tokens | width | depth | lengths | GMACs/input | ms/forward | speed-up vs full |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        base = ms_of(rows, r["batch"], r["tokens"], 1.0, 1.0, "full")
        lines.append(
            f"| {r['batch']} | {r['tokens']} | {r['width']} | {r['depth']} | {r['lengths']} | "
            f"{r['gmacs']:.3f} | {r['ms']:.2f} | {base / r['ms']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None, help="checkpoint (default: shipped one, else base weights)")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds at batch 1 (batch 8: a third)")
    parser.add_argument("--out", default=str(RESULTS), help="where to write the table, JSON and PNG")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model, source = load_model(args.checkpoint)
    rows = measure(model, args.rounds)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    found = checks(rows, args.threads, source)
    (out / "model_latency.json").write_text(json.dumps({"checks": found, "rows": rows}, indent=1) + "\n")
    (out / "model_latency.md").write_text(markdown(rows, model))
    plot(rows, out / "model_latency.png")
    print(json.dumps(found, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
