"""The searched space of sub-networks, and the seeds the study starts from.

Width x depth x INT8, and per kept layer a narrowing and a keep factor. Lengths are parametrised
as per-layer keep factors in [0.5, 1] whose running product gives the keep ratios, so every sampled
configuration is non-increasing by construction; each kept layer may also run 0-2 trained widths
below the base width (`subnet_from_trial`). The seeds are the one-dimensional baselines
(`baseline_params`), measured in the same run as the search.
"""

from __future__ import annotations

from models.nn.subnet import DEPTHS, WIDTHS, SubnetConfig, kept_layer_count

FACTOR_STEP = 0.05
MAX_NARROWING = 2  # trained widths a layer may sit below the base width (`subnet_from_trial`)
LENGTH_FACTORS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5)
# Keep factors of the late-drop seeds: full length through the first half of the layers, then
# fewer tokens. On this model a drop after layer 1 costs F1 fast (10% of the tokens: -7.6 on 300
# questions) while 30% after layer 4 costs nothing measurable, and NSGA-II's uniform factors in
# [0.5, 1] almost never sample three 1.0s in a row (about 0.6% of draws).
# They apply from the first layer of the second half on (layers 4-6 of 6; a model with fewer
# layers in its second half takes the first factors only).
LATE_DROPS = ((0.7, 1.0, 1.0), (1.0, 0.7, 0.75), (0.8, 0.8, 0.8))
LATE_DROP_WIDTHS = (1.0, 0.75, 0.5)
# Narrowing steps of the mixed-width seeds, by layer: the first layer and the last two one width
# down, the last two only, and the first and the last two with the last two widths down. At the
# base width 0.75 these scored 66.28, 66.54 and 66.60 F1 on the first 700 eval questions in INT8
# (uniform 0.75: 66.50, uniform 0.5: 62.02) for 17%, 11% and 22% fewer MACs; narrowing the first
# two or the middle layers instead cost 1.5-3.3 (README, "Widths per layer").
# Written for 6 layers as (first, middle..., second to last, last) and stretched to any count.
NARROWINGS = ((1, 0, 1, 1), (0, 0, 1, 1), (1, 0, 1, 2))
NARROWING_WIDTHS = (1.0, 0.75, 0.5)


def subnet_from_trial(trial, num_layers: int, allow_lengths: bool = True, int8: bool = True) -> SubnetConfig:  # type: ignore[no-untyped-def]
    """Sample a sub-network: width, depth, INT8 or not (`int8`: whether it may be) and (optionally)
    per kept layer a narrowing and a keep factor.

    `width` is the base width; gene `narrow{i}` makes the i-th kept layer 0, 1 or 2 trained widths
    narrower (never below the narrowest). Steps rather than free per-layer widths so that the
    base-width configurations (every step 0) are one point of the space that crossover keeps
    reaching, and two steps at most because on this checkpoint a layer two widths down already
    costs F1 (README, "Widths per layer")."""
    width = trial.suggest_categorical("width", list(WIDTHS))
    depth = trial.suggest_categorical("depth", list(DEPTHS))
    quantized = trial.suggest_categorical("int8", [False, True] if int8 else [False])
    if not allow_lengths:
        return SubnetConfig(width, depth, quantized=quantized)
    kept = kept_layer_count(num_layers, depth)
    ratios, running, widths = [], 1.0, []
    for i in range(num_layers):  # all genes are always sampled so NSGA-II's crossover sees one space
        factor = trial.suggest_float(f"keep{i}", 0.5, 1.0, step=FACTOR_STEP)
        steps = trial.suggest_int(f"narrow{i}", 0, MAX_NARROWING)
        if i < kept:
            running *= factor
            ratios.append(round(running, 4))
            widths.append(narrowed(width, steps))
    return SubnetConfig(
        max(widths), depth, tuple(ratios) if any(r < 1.0 for r in ratios) else None, quantized, tuple(widths)
    )


def narrowed(width: float, steps: int) -> float:
    """The trained width `steps` below `width`, or the narrowest."""
    return WIDTHS[min(WIDTHS.index(width) + steps, len(WIDTHS) - 1)]


def narrowing_genes(pattern: tuple[int, ...], num_layers: int) -> dict[str, int]:
    """`narrow{i}` genes for a (first, middle, second to last, last) pattern on `num_layers` layers."""
    first, middle, before_last, last = pattern
    steps = [first] + [middle] * max(0, num_layers - 3) + [before_last, last]
    return {f"narrow{i}": s for i, s in enumerate(steps[-num_layers:] if num_layers < 3 else steps)}


def baseline_params(num_layers: int) -> dict[str, list[dict[str, object]]]:
    """Trial parameters of the one-dimensional baselines, by family.

    "grid": DynaBERT's 12 width x depth pairs at full length; "lengths": full width and depth with
    one keep factor at every layer (Dynamic-TinyBERT's geometric length decay); "late drops":
    widths 1, 0.75 and 0.5 at full depth keeping every token through the first half of the layers
    (`LATE_DROPS`); "mixed widths": widths 1, 0.75 and 0.5 at full depth and length with the end
    layers narrowed (`NARROWINGS`). All lie inside the joint space, so they are enqueued as the
    study's first trials: measured in the same run as the search, and the seeds NSGA-II's first
    generation breeds from.
    """
    full = {f"keep{i}": 1.0 for i in range(num_layers)} | {f"narrow{i}": 0 for i in range(num_layers)}
    grid = [{"width": w, "depth": d, "int8": False, **full} for w in WIDTHS for d in DEPTHS]
    lengths = [
        {"width": 1.0, "depth": 1.0, "int8": False, **full, **{f"keep{i}": f for i in range(num_layers)}}
        for f in LENGTH_FACTORS
    ]
    half = num_layers - num_layers // 2
    late = [
        {
            "width": w,
            "depth": 1.0,
            "int8": False,
            **full,
            **{f"keep{i}": f for i, f in zip(range(half, num_layers), factors)},
        }
        for w in LATE_DROP_WIDTHS
        for factors in LATE_DROPS
    ]
    mixed, seen = [], set()
    for w in NARROWING_WIDTHS:
        for pattern in NARROWINGS:
            genes = narrowing_genes(pattern, num_layers)
            widths = tuple(narrowed(w, steps) for steps in genes.values())
            if widths not in seen:  # two steps below 0.5 is one: that pattern repeats another
                seen.add(widths)
                mixed.append({"width": w, "depth": 1.0, "int8": False, **full, **genes})
    return {"grid": grid, "lengths": lengths, "late drops": late, "mixed widths": mixed}


def family(subnet: SubnetConfig) -> set[str]:
    """The baseline families a sub-network belongs to (every one belongs to "joint")."""
    names = {"joint"}
    if not subnet.quantized and subnet.lengths is None and subnet.layer_widths is None:
        names.add("grid")
    if not subnet.quantized and subnet.width == 1.0 and subnet.depth == 1.0 and subnet.layer_widths is None:
        names.add("lengths")
        if subnet.lengths is None:
            names.add("full")
    return names
