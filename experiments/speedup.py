"""Speed-up of subquad over dense Gauss-Newton, every update mode, both measured in one process.

float32, c = 0.2, n = 16, L = 2, Cholesky solve: for each m, each trainer is built once and then
measured at every thread count (numba and BLAS pinned together): median per-iteration seconds,
the median of each phase, the ratio dense-gn / subquad with a 95% percentile-bootstrap interval
(samples of both trainers resampled independently), and the forward's achieved bytes/s (counted
bytes of W read / forward seconds). With ``--update fused`` the update runs inside the forward,
so its time and work are in the forward's columns. Writes results/speedup/{speedup.csv,
environment.json, command.txt}.
Run: .venv/bin/python experiments/speedup.py [--m 4096 16384 32768] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from subquad.files import atomic_write_frame, atomic_write_json, atomic_write_text
from subquad.harness.environment import collect_environment, limit_threads
from subquad.harness.measure import warm_kernels
from subquad.model.train import TrainConfig, build_trainer
from subquad.model.trainer import PHASES, Trainer

VARIANTS = [("dense-gn", {}), ("subquad", {"update": "scatter"}),
            ("subquad", {"update": "rowdense"}), ("subquad", {"update": "lazy"}),
            ("subquad", {"update": "fused"})]
BOOTSTRAP = 2000


def measure(tr: Trainer, iters: int) -> tuple[dict, list[float]]:
    """Median per-iteration and per-phase seconds after a two-step warm-up, and the samples.

    A sample spans one fold period of the lazy structure (1 step otherwise), so its
    per-iteration time amortises the fold exactly instead of the median skipping it.
    """
    for _ in range(2):
        tr.step()
    period = tr.kernels.fold_period(16) if hasattr(tr.kernels, "fold_period") else 1
    it, fb = [], []
    phase: dict[str, list[float]] = {p: [] for p in PHASES}
    for _ in range(iters):
        steps = [tr.step() for _ in range(period)]
        it.append(sum(sum(st.seconds.values()) for st in steps) / period)
        for p in PHASES:
            phase[p].append(sum(st.seconds[p] for st in steps) / period)
        fb.append(sum(st.bytes["forward"] for st in steps) / period)
    row = {"update": tr.describe().get("update"), "iteration_s": statistics.median(it),
           **{f"{p}_s": statistics.median(v) for p, v in phase.items()},
           "forward_bytes": statistics.median(fb),
           "forward_GBps": statistics.median(fb) / statistics.median(phase["forward"]) / 1e9,
           "samples": iters, "iters_per_sample": period}
    return row, it


def ratio_interval(dense: list[float], sub: list[float], seed: int) -> tuple[float, float]:
    """95% percentile-bootstrap interval of median(dense) / median(sub)."""
    rng = np.random.default_rng(seed)
    d, s = np.asarray(dense), np.asarray(sub)
    rd = np.median(rng.choice(d, (BOOTSTRAP, d.size)), axis=1)
    rs = np.median(rng.choice(s, (BOOTSTRAP, s.size)), axis=1)
    lo, hi = np.percentile(rd / rs, [2.5, 97.5])
    return float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--m", type=int, nargs="+", default=[4096, 16384, 32768])
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                    help="BLAS/numba thread counts, each measured on the same trainers")
    ap.add_argument("--out", default="results/speedup")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rows, samples = [], {}
    for m in args.m:
        for method, opts in VARIANTS:
            cfg = TrainConfig(method=method, m=m, n=16, d=16, L=2, c=0.2, dtype="float32",
                              **opts)
            tr = build_trainer(cfg)
            tr.start()
            for threads in args.threads:
                limit_threads(threads)
                warm_kernels("numpy", "float32")
                row, it = measure(tr, args.iters)
                rows.append({"method": method, "m": m, "threads": threads, **row})
                samples[(method, row["update"], m, threads)] = it
                print(rows[-1], flush=True)
            del tr
    df = pd.DataFrame(rows)
    ratio, lo, hi = [], [], []
    for k, r in enumerate(df.itertuples()):
        dense = samples[("dense-gn", "dense", r.m, r.threads)]
        own = samples[(r.method, r.update, r.m, r.threads)]
        ratio.append(statistics.median(dense) / statistics.median(own))
        a, b = ratio_interval(dense, own, k)
        lo.append(a)
        hi.append(b)
    df["speedup_vs_dense_gn"] = ratio
    df["speedup_ci_low"] = lo
    df["speedup_ci_high"] = hi
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_frame(out / "speedup.csv", df)
    atomic_write_json(out / "environment.json", collect_environment())
    atomic_write_text(out / "command.txt", " ".join(["python", *sys.argv]) + "\n")
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
