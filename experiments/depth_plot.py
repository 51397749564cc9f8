"""One figure for results/depth: per-iteration seconds and counted work vs L, and the active
fraction / Q(beta) of every layer (range over all training steps) vs L, for each threshold.

Run: .venv/bin/python experiments/depth_plot.py [results/depth]
-> DIR/figures/depth.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from subquad.files import atomic_savefig, read_table  # noqa: E402


def main(run: Path) -> Path:
    runs = read_table(run / "runs.csv", "runs.csv", ("L", "phase", "seconds", "work"))
    tr = read_table(run / "training.csv", "training.csv", ("L", "layer", "active_fraction"))
    it = runs[(runs.phase == "iteration") & (runs.status == "ok")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for th, g in it.groupby("threshold"):
        med = g.groupby("L")[["seconds", "work"]].median()
        axes[0].plot(med.index, med.seconds * 1e3, "o-", label=th)
        axes[1].plot(med.index, med.work, "o-", label=th)
    for ax, what in zip(axes[:2], ("ms per iteration", "multiply-adds per iteration")):
        ax.set_xlabel("L")
        ax.set_ylabel(what)
        ax.legend(title="threshold (ok cells)")
    ratio = tr.assign(r=tr.active_fraction / tr.expected_active_fraction)
    for th, g in ratio.groupby("threshold"):
        rng = g.groupby("L").r.agg(["min", "max"])
        axes[2].fill_between(rng.index, rng["min"], rng["max"], alpha=0.3, label=th)
        axes[2].plot(rng.index, rng["max"], "o-")
    axes[2].axhspan(1 / 1.5, 1.5, color="grey", alpha=0.1, label="within 1.5x")
    axes[2].set_xlabel("L")
    axes[2].set_ylabel("active fraction / Q(beta), all layers and steps")
    axes[2].legend()
    fig.suptitle(f"Depth ({run}): cost and activity vs L")
    fig.tight_layout()
    out = run / "figures" / "depth.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_savefig(fig, out, dpi=110)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main(Path(sys.argv[1] if len(sys.argv) > 1 else "results/depth")))
