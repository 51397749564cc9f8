"""Speed-up of subquad over dense Gauss-Newton, every update mode, both measured in one process.

float32, c = 0.2, n = 16, L = 2, Cholesky solve: for each m, each trainer is built once and then
measured at every thread count (numba and BLAS pinned together): median per-iteration seconds,
the median of each phase, the ratio dense-gn / subquad with a 95% percentile-bootstrap interval
(samples of both trainers resampled independently), and the forward's achieved bytes/s (counted
bytes of W read / forward seconds). With ``--update fused`` the update runs inside the forward,
so its time and work are in the forward's columns; ``update_in_forward_s`` is what it adds there
(the median forward with the step's pending update minus without it, interleaved). Writes
results/speedup/{speedup.csv, report.md, environment.json, command.txt}.
Run: .venv/bin/python experiments/speedup.py [--m 4096 16384 32768] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from recording import record

from subquad.files import atomic_write_text
from subquad.harness.environment import limit_threads
from subquad.harness.measure import warm_kernels
from subquad.model.train import TrainConfig, build_trainer
from subquad.model.trainer import Trainer
from subquad.vocabulary import ITERATION_PHASES as PHASES

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


def fused_update_cost(tr: Trainer, reps: int = 15) -> float:
    """Seconds the pending update adds to a fused forward: one step records the update the
    next forward applies; that forward is then timed with it and without it, interleaved, the
    update applied with alternating sign so that W ends where it started (up to rounding)."""
    k = tr.kernels
    forward, seen = k.forward, {}

    def record():
        seen["pending"] = list(k.pending)
        return forward()

    k.forward = record
    tr.step()
    k.forward = forward
    plus = list(seen["pending"])
    minus = [None if p is None else (p[0], p[1], -p[2]) for p in plus]
    with_u, without = [], []
    for rep in range(2 * reps):
        k.pending = list(plus if rep % 2 else minus)
        t0 = time.perf_counter()
        k.forward()
        with_u.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        k.forward()  # nothing pending now
        without.append(time.perf_counter() - t0)
    return statistics.median(with_u) - statistics.median(without)


def report(df: pd.DataFrame, env: dict, command: str) -> str:
    """Markdown: per width and thread count, every update mode side by side with dense-gn."""
    lines = ["# Speed-up of subquad over dense Gauss-Newton, every update mode", "",
             f"Machine: {env.get('cpu_model', '?')}, {env.get('cores', '?')} cores "
             f"(machine id `{env.get('machine', '?')}`). n = 16, d = 16, L = 2, c = 0.2, "
             "float32, Cholesky solve; both trainers of a row measured in the same process "
             "(median of the samples, ms per iteration; speed-up = median dense-gn / median "
             "subquad with a 95% bootstrap interval). `fused` runs the update and the top "
             "layer's backward inside the forward: its update column is bookkeeping, and "
             "'update in forward' is what the pending update adds to that forward.", "",
             f"Reproduce: `{command}`", ""]
    for (m, threads), g in df.groupby(["m", "threads"], sort=True):
        lines += [f"## m = {m}, {threads} thread{'s' if threads > 1 else ''}", "",
                  "| trainer | update | iteration ms | forward | backward | update | fold | "
                  "update in forward | update / forward | speed-up [95% CI] |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in g.itertuples():
            upd = r.update_s if r.update != "fused" else r.update_in_forward_s
            fwd = r.forward_s - (r.update_in_forward_s if r.update == "fused" else 0.0)
            share = f"{upd / fwd:.0%}" if r.method == "subquad" and fwd > 0 else "-"
            inside = (f"{1e3 * r.update_in_forward_s:.2f}" if r.update == "fused" else "-")
            lines.append(
                f"| {r.method} | {r.update} | {1e3 * r.iteration_s:.2f} | "
                f"{1e3 * r.forward_s:.2f} | {1e3 * r.backward_s:.2f} | {1e3 * r.update_s:.2f} | "
                f"{1e3 * r.fold_s:.2f} | {inside} | {share} | {r.speedup_vs_dense_gn:.2f} "
                f"[{r.speedup_ci_low:.2f}, {r.speedup_ci_high:.2f}] |")
        lines.append("")
    lines += ["'update / forward': the update phase over the forward phase (scatter, rowdense, "
              "lazy: separate phases; fused: the update's share inside the forward, over the "
              "forward without it). Lazy's fold is amortised over its fold period.", ""]
    return "\n".join(lines)


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
                row["update_in_forward_s"] = (fused_update_cost(tr) if row["update"] == "fused"
                                              else 0.0)
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
    env, command = record(out, "speedup.csv", df)
    atomic_write_text(out / "report.md", report(df, env, command))
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
