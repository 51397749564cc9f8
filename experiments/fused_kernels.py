"""The measurements behind two auto rules of the fused update (docs/CPU_KERNELS.md).

1. ``update``: per-iteration seconds of ``fused`` against ``scatter`` over m (where does
   fusing the update into the forward start to pay; ``AUTO_FUSED_MIN_W_BYTES``);
2. ``forward``: the fused forward's two shapes, per-example against input-major, over n and m
   (``FUSED_AUTO_KERNEL``).

Each comparison builds both trainers in one process, takes two warm-up steps and then
interleaves their steps (median of ``--steps`` per trainer), float32, L = 2, c = 0.2, d = 16.
Writes results/fused-kernels/{fused_kernels.csv, report.md, environment.json, command.txt}.
Run: .venv/bin/python experiments/fused_kernels.py [--threads 1 2] [--steps 7]
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

import pandas as pd
from recording import record

from subquad.files import atomic_write_text
from subquad.harness.environment import limit_threads
from subquad.harness.measure import warm_kernels
from subquad.model.train import TrainConfig, build_trainer

#: (n, widths) of each comparison
UPDATE_GRID = [(16, (1024, 2048, 2896, 4096, 8192)), (64, (2048, 2896, 4096, 8192))]
FORWARD_GRID = [(16, (8192, 16384)), (32, (8192,)), (64, (4096, 8192, 16384)),
                (128, (4096, 8192))]


def compare(m: int, n: int, variants: dict[str, dict], steps: int) -> dict[str, float]:
    """Median iteration seconds of each variant, their steps interleaved."""
    trainers = {}
    for name, opts in variants.items():
        tr = build_trainer(TrainConfig(method="subquad", m=m, n=n, d=16, L=2, c=0.2,
                                       dtype="float32", **opts))
        tr.start()
        for _ in range(2):
            tr.step()
        trainers[name] = tr
    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(steps):
        for name, tr in trainers.items():
            times[name].append(sum(tr.step().seconds.values()))
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=7)
    ap.add_argument("--out", default="results/fused-kernels")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    warm_kernels("numpy", "float32")
    rows = []
    for threads in args.threads:
        limit_threads(threads)
        for n, widths in UPDATE_GRID:
            for m in widths:
                t = compare(m, n, {"scatter": {"update": "scatter"},
                                   "fused": {"update": "fused"}}, args.steps)
                rows.append({"comparison": "update", "threads": threads, "n": n, "m": m,
                             "a": "fused", "b": "scatter", "a_s": t["fused"],
                             "b_s": t["scatter"], "ratio": t["fused"] / t["scatter"]})
                print(rows[-1], flush=True)
        for n, widths in FORWARD_GRID:
            for m in widths:
                t = compare(m, n, {k: {"update": "fused", "forward_kernel": k}
                                   for k in ("per-example", "input-major")}, args.steps)
                rows.append({"comparison": "forward", "threads": threads, "n": n, "m": m,
                             "a": "per-example", "b": "input-major", "a_s": t["per-example"],
                             "b_s": t["input-major"],
                             "ratio": t["per-example"] / t["input-major"]})
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    out = Path(args.out)
    env, command = record(out, "fused_kernels.csv", df)
    lines = ["# Fused update: where it pays, and which forward shape it uses", "",
             f"Machine: {env.get('cpu_model', '?')}, {env.get('cores', '?')} cores (machine id "
             f"`{env.get('machine', '?')}` at {args.threads[-1]} thread(s); the id includes the "
             "thread count). float32, L = 2, c = 0.2, d = 16; medians of interleaved steps of "
             "both trainers in one process (ms per iteration).", "",
             f"Reproduce: `{command}`", ""]
    for (comp, threads), g in df.groupby(["comparison", "threads"], sort=False):
        a, b = g["a"].iloc[0], g["b"].iloc[0]
        lines += [f"## {comp}: {a} / {b}, {threads} thread{'s' if threads > 1 else ''}", "",
                  f"| n | m | {a} ms | {b} ms | {a} / {b} |", "|---|---|---|---|---|"]
        lines += [f"| {r.n} | {r.m} | {1e3 * r.a_s:.2f} | {1e3 * r.b_s:.2f} | {r.ratio:.2f} |"
                  for r in g.itertuples()]
        lines.append("")
    atomic_write_text(out / "report.md", "\n".join(lines))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
