"""Speed-up of subquad over dense Gauss-Newton, both measured in this one process.

float32, c = 0.2, n = 16, L = 2: median per-iteration seconds of dense-gn and of every subquad
update mode (Cholesky solve) at each m, their ratio, and the sparse forward's achieved bytes/s
(counted bytes of W read / forward seconds). Writes results/speedup/{speedup.csv,
environment.json}. Run: .venv/bin/python experiments/speedup.py [--m 4096 16384] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import warnings
from pathlib import Path

import pandas as pd

from subquad.files import atomic_write_frame, atomic_write_json
from subquad.harness.environment import collect_environment, limit_threads
from subquad.harness.measure import warm_kernels
from subquad.model.train import TrainConfig, build_trainer

VARIANTS = [("dense-gn", {}), ("subquad", {"update": "scatter"}),
            ("subquad", {"update": "rowdense"}), ("subquad", {"update": "lazy"})]


def measure(method: str, opts: dict, m: int, iters: int) -> dict:
    """Median per-iteration and per-forward seconds after a two-step warm-up.

    A sample spans one fold period of the lazy structure (1 step otherwise), so its
    per-iteration time amortises the fold exactly instead of the median skipping it.
    """
    cfg = TrainConfig(method=method, m=m, n=16, d=16, L=2, c=0.2, dtype="float32", **opts)
    tr = build_trainer(cfg)
    tr.start()
    for _ in range(2):
        tr.step()
    period = tr.kernels.fold_period(16) if hasattr(tr.kernels, "fold_period") else 1
    it, fw, fb = [], [], []
    for _ in range(iters):
        steps = [tr.step() for _ in range(period)]
        it.append(sum(sum(st.seconds.values()) for st in steps) / period)
        fw.append(sum(st.seconds["forward"] for st in steps) / period)
        fb.append(sum(st.bytes["forward"] for st in steps) / period)
    return {"method": method, "update": tr.describe().get("update"), "m": m,
            "iteration_s": statistics.median(it), "forward_s": statistics.median(fw),
            "forward_bytes": statistics.median(fb),
            "forward_GBps": statistics.median(fb) / statistics.median(fw) / 1e9,
            "samples": iters, "iters_per_sample": period}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--m", type=int, nargs="+", default=[4096, 16384])
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="BLAS/numba threads (all)")
    ap.add_argument("--out", default="results/speedup")
    args = ap.parse_args()
    limit_threads(args.threads)
    warm_kernels("numpy", "float32")
    warnings.simplefilter("ignore")
    rows = [measure(meth, opts, m, args.iters) for m in args.m for meth, opts in VARIANTS]
    df = pd.DataFrame(rows)
    dense = df[df.method == "dense-gn"].set_index("m")["iteration_s"]
    df["speedup_vs_dense_gn"] = df["m"].map(dense) / df["iteration_s"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_frame(out / "speedup.csv", df)
    atomic_write_json(out / "environment.json", collect_environment())
    print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))


if __name__ == "__main__":
    main()
