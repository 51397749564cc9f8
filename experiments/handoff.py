"""Thread hand-off check: does the training loop pay for numba (OpenMP) and BLAS spinning?

Runs the subquad iteration (float32, m = 4096, n = 16, L = 2, all threads) in fresh processes
under OMP_WAIT_POLICY = PASSIVE (subquad's default, set before numba loads) and ACTIVE, with
the scatter update (numba only, tiny LAPACK solve) and the lazy update (numba kernels alternate
with BLAS GEMMs in every layer). CPU_KERNELS.md measured ~7.6 ms per numba/BLAS switch with
spinning runtimes on 2 cores, ~1 ms when passive. Writes results/handoff/handoff.csv.
Run: .venv/bin/python experiments/handoff.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from subquad.files import atomic_write_frame

CHILD = r"""
import json, statistics, sys, warnings
from subquad.harness.measure import warm_kernels
from subquad.model.train import TrainConfig, build_trainer
warnings.simplefilter("ignore")
warm_kernels("numpy", "float32")
out = []
for update in ("scatter", "lazy"):
    tr = build_trainer(TrainConfig(method="subquad", m=4096, n=16, L=2, c=0.2, dtype="float32",
                                   update=update, rank_max=64))
    tr.start()
    for _ in range(3):
        tr.step()
    steps = [tr.step() for _ in range(15)]
    it = [sum(s.seconds.values()) for s in steps]
    fw = [s.seconds["forward"] for s in steps]
    out.append({"update": update, "iteration_s": statistics.median(it),
                "forward_s": statistics.median(fw)})
print(json.dumps(out))
"""


def main() -> None:
    rows = []
    for policy in ("PASSIVE", "ACTIVE"):
        env = {**os.environ, "OMP_WAIT_POLICY": policy}
        res = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                             text=True, check=True)
        for r in json.loads(res.stdout.strip().splitlines()[-1]):
            rows.append({"omp_wait_policy": policy, **r})
    df = pd.DataFrame(rows)
    out = Path("results/handoff")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_frame(out / "handoff.csv", df)
    print(df.to_string(index=False, float_format=lambda v: f"{v * 1e3:.2f} ms"))


if __name__ == "__main__":
    main()
