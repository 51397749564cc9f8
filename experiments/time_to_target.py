"""Total time to a target loss vs width, from one run of experiments/convergence.toml.

For every cell: the first Gauss-Newton step t at which the loss is <= TARGET x its initial loss
(training.csv), and t x the cell's median per-iteration seconds (runs.csv, phase iteration, the
timed samples of the same cell); the m^2 initialisation is reported beside it, not added. A cell
that does not reach the target within its training steps is kept with steps = "not reached".
Writes DIR/time_to_target.csv, DIR/time_to_target.md and DIR/figures/time_to_target.png.

Run: .venv/bin/python experiments/time_to_target.py [results/convergence] [--target 1e-6]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from subquad.files import atomic_savefig, atomic_write_frame, atomic_write_text, read_table


def _variant(method: str, options: str) -> str:
    """dense-gn, subquad or subquad-damped (a damped cell's options hold damping=MU > 0)."""
    mu = next((p.split("=", 1)[1] for p in str(options).split(";")
               if p.startswith("damping=")), "0")
    return method + ("-damped" if float(mu) > 0 else "")


def table(run: Path, target: float) -> pd.DataFrame:
    tr = read_table(run / "training.csv", "training.csv", ("cell", "iteration", "loss"))
    runs = read_table(run / "runs.csv", "runs.csv", ("cell", "phase", "seconds", "status"))
    tr = tr[tr.layer == 0]
    ok = runs[(runs.phase == "iteration") & (runs.status == "ok")]
    sec = ok.groupby("cell").seconds.median()
    init = runs[runs.phase == "init"].groupby("cell").seconds.median()
    status = runs.groupby("cell").status.agg(lambda s: ",".join(sorted(set(s))))
    rows = []
    for cell, g in tr.groupby("cell"):
        g = g.sort_values("iteration")
        loss0 = float(g.loss.iloc[0])
        hit = g[(g.iteration > 0) & (g.loss <= target * loss0)]
        steps = int(hit.iteration.iloc[0]) if len(hit) else None
        meta = runs[runs.cell == cell].iloc[0]
        per_iter = float(sec.get(cell, np.nan))
        rows.append({"method": meta.method, "options": meta.options, "c": meta.c, "m": meta.m,
                     "n": meta.n, "seed": meta.seed, "loss0": loss0,
                     "final_loss_ratio": float(g.loss.iloc[-1]) / loss0,
                     "steps_run": int(g.iteration.max()),
                     "steps_to_target": steps if steps is not None else "not reached",
                     "seconds_per_iteration": per_iter,
                     "seconds_to_target": steps * per_iter if steps is not None else np.nan,
                     "init_seconds": float(init.get(cell, np.nan)),
                     "status": status.get(cell, ""), "cell": cell})
    out = pd.DataFrame(rows)
    out["variant"] = [_variant(m, o) for m, o in zip(out.method, out.options)]
    return out.sort_values(["variant", "c", "m", "seed"]).reset_index(drop=True)


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (variant, c, m) over seeds: median and worst steps and seconds, seeds reaching."""
    steps = pd.to_numeric(df.steps_to_target, errors="coerce")
    g = df.assign(steps=steps).groupby(["variant", "c", "m"])
    return g.agg(seeds=("seed", "count"), reached=("steps", "count"),
                 median_steps=("steps", "median"), worst_steps=("steps", "max"),
                 median_seconds=("seconds_to_target", "median"),
                 worst_seconds=("seconds_to_target", "max"),
                 seconds_per_iteration=("seconds_per_iteration", "median")).reset_index()


def figure(df: pd.DataFrame, path: Path, target: float) -> None:
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    colours = {c: f"C{i + 1}" for i, c in enumerate(sorted(df.c.unique()))}
    for (variant, c), g in df.groupby(["variant", "c"]):
        g = g.sort_values("m")
        dense = variant == "dense-gn"
        ax.plot(g.m, g.median_seconds, "--" if variant.endswith("damped") else "-",
                marker="s" if dense else "o", color="C0" if dense else colours[c],
                label=f"{variant}, c={c:g}")
    miss = df[df.reached < df.seeds]
    if len(miss):  # some seed did not reach the target within the run's steps
        ax.plot(miss.m, [df.median_seconds.max() * 1.5] * len(miss), "x", color="k")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("width m")
    ax.set_ylabel(f"seconds to loss <= {target:g} x initial (init excluded)")
    ax.set_title("Time to a target loss, median over seeds (x: a seed did not reach it)",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=120)
    plt.close(fig)


def _md_table(df: pd.DataFrame) -> list[str]:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for r in df.itertuples(index=False):
        lines.append("| " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                       for v in r) + " |")
    return lines


def report(df: pd.DataFrame, summ: pd.DataFrame, run: Path, target: float) -> str:
    cols = ["variant", "c", "m", "seed", "steps_to_target", "seconds_per_iteration",
            "seconds_to_target", "final_loss_ratio", "init_seconds", "status"]
    return "\n".join([
        f"# Time to loss <= {target:g} x initial loss ({run})", "",
        "Steps from training.csv, seconds per iteration = median of the cell's timed samples "
        "(runs.csv); the m^2 initialisation is listed apart, not added. Reproduce: "
        f"`.venv/bin/python experiments/time_to_target.py {run} --target {target:g}`.", "",
        "## Over seeds", "", *_md_table(summ), "",
        "![time to target](figures/time_to_target.png)", "", "## Every cell", "",
        *_md_table(df[cols]), ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?", default=Path("results/convergence"))
    ap.add_argument("--target", type=float, default=1e-6)
    args = ap.parse_args()
    df = table(args.run, args.target)
    summ = summary(df)
    (args.run / "figures").mkdir(parents=True, exist_ok=True)
    atomic_write_frame(args.run / "time_to_target.csv", df)
    atomic_write_frame(args.run / "time_to_target_summary.csv", summ)
    text = report(df, summ, args.run, args.target)
    atomic_write_text(args.run / "time_to_target.md", text)
    figure(summ, args.run / "figures" / "time_to_target.png", args.target)
    print(text)


if __name__ == "__main__":
    main()
