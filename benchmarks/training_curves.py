"""Training loss per stage from a checkpoint's training.json, as one PNG.

The learning curve the README shows for the teacher and the distillation stages:
`python -m benchmarks.training_curves [--checkpoint DIR]` writes benchmarks/results/training_curves.png.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from models.infer import checkpoint as ckpt

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(ckpt.DEFAULT_DIR), help="checkpoint directory")
    parser.add_argument("--out", default=str(RESULTS / "training_curves.png"))
    args = parser.parse_args(argv)
    training = json.loads((Path(args.checkpoint) / "training.json").read_text())
    stages = [s for s in training.get("stages", []) if s.get("loss_every_50_steps")]
    if not stages:
        raise SystemExit(f"{args.checkpoint}/training.json records no training losses")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 3.4), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        losses = stage["loss_every_50_steps"]
        steps = [min(50 * (i + 1), stage["steps"]) for i in range(len(losses))]
        recipe = stage["recipe"]
        ax.plot(steps, losses, "o-")
        ax.set(
            title=f"{stage['stage']} ({stage['steps']} steps x {recipe['batch_size']}, lr {recipe['lr']:g})",
            xlabel="step",
            ylabel="mean loss over 50 steps",
        )
        ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
