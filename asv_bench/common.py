"""Shared helpers of the asv suite (no benchmarks here).

The suite talks to subquad only through interfaces that have been stable over the benchmarked
history: the command line ``python -m subquad train ... --json`` (run by the benchmarked
environment's interpreter, ``sys.executable``) and, for the in-process ``time_*`` benchmarks,
``subquad.model.train`` (``TrainConfig``, ``build_trainer``). Nothing from subquad.analysis,
subquad.harness or subquad.schema is imported: exponents are fitted here, by plain least
squares on log-log axes.

Every run is one-threaded: the thread variables below go into every child's environment and
into this process's environment before numpy or numba are imported (see ``one_thread``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

#: environment of every subquad child process (and of this process, see ``one_thread``)
ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
}

#: the network of every benchmark except the width m: n = 16 samples, d = 16, L = 2, c = 0.2,
#: float32 (the README's headline configuration), seed 0, synthetic teacher data
BASE = {"n": 16, "d": 16, "L": 2, "c": 0.2, "dtype": "float32", "seed": 0}

#: a child that runs longer than this is a broken commit, not a slow one
CHILD_TIMEOUT_S = 600

PHASES = ("forward", "backward", "gram", "solve", "update", "fold")


def one_thread() -> None:
    """Pin this process to one thread (call before importing numpy/numba/subquad)."""
    for key, value in ONE_THREAD.items():
        os.environ[key] = value


def train_json(method: str, m: int, iters: int, **options: object) -> dict:
    """``python -m subquad train --method METHOD --m M ... --json``: its one JSON object.

    ``options`` override BASE and add method options (``update="fused"`` -> ``--update fused``).
    Raises RuntimeError naming the command when it fails or its status is not ``ok``.
    """
    args = {**BASE, **options, "iters": iters}
    cmd = [sys.executable, "-m", "subquad", "train", "--method", method, "--m", str(m)]
    for key, value in args.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    cmd.append("--json")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S,
                          env={**os.environ, **ONE_THREAD})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[1:])} exited {proc.returncode}: "
                           f"{(proc.stdout + proc.stderr)[-800:]}")
    record = json.loads(proc.stdout)
    if record.get("status") != "ok":
        raise RuntimeError(f"{' '.join(cmd[1:])}: status {record.get('status')!r} "
                           f"{record.get('message', '')}")
    return record


def iteration_work(record: dict, phases: tuple[str, ...] = PHASES) -> list[float]:
    """Counted multiply-adds per iteration, summed over ``phases``."""
    work = record["work"]
    iters = len(work["forward"])
    return [sum(float(work[p][t]) for p in phases if p in work) for t in range(iters)]


def iteration_seconds(record: dict) -> list[float]:
    """Seconds per iteration, summed over every phase the JSON reports."""
    seconds = record["seconds"]
    iters = len(seconds["forward"])
    return [sum(float(v[t]) for v in seconds.values()) for t in range(iters)]


def loglog_slope(ms: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(m): the exponent x of y ~ m^x."""
    import numpy as np  # noqa: PLC0415  (after one_thread in the benchmark modules)

    x = np.log(np.asarray(ms, dtype=float))
    y = np.log(np.asarray(ys, dtype=float))
    if not np.all(np.isfinite(y)):
        return float("nan")  # a zero in the series: no power law to fit
    return float(np.polyfit(x, y, 1)[0])


def bootstrap_slope(ms: list[float], samples: list[list[float]], reps: int = 2000,
                    level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """Exponent of the per-width medians and its percentile bootstrap interval.

    ``samples[k]`` are the per-iteration values at width ``ms[k]``; each replicate resamples
    every width's iterations with replacement and refits the slope of the medians. A fixed
    seed makes the interval a function of the measurements alone.
    """
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    point = loglog_slope(ms, [float(np.median(s)) for s in samples])
    x = np.log(np.asarray(ms, dtype=float))
    xc = x - x.mean()
    arrays = [np.asarray(s, dtype=float) for s in samples]
    meds = np.empty((reps, len(arrays)))
    for k, a in enumerate(arrays):
        meds[:, k] = np.median(a[rng.integers(0, a.size, size=(reps, a.size))], axis=1)
    logs = np.log(meds)
    slopes = (logs - logs.mean(axis=1, keepdims=True)) @ xc / float(xc @ xc)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(slopes, [tail, 1.0 - tail])
    return point, float(low), float(high)


def bootstrap_ratio(num: list[float], den: list[float], reps: int = 2000,
                    level: float = 0.95, seed: int = 0) -> tuple[float, float, float]:
    """median(num) / median(den) and its percentile bootstrap interval."""
    import numpy as np  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    a, b = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    point = float(np.median(a) / np.median(b))
    ra = np.median(a[rng.integers(0, a.size, size=(reps, a.size))], axis=1)
    rb = np.median(b[rng.integers(0, b.size, size=(reps, b.size))], axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(ra / rb, [tail, 1.0 - tail])
    return point, float(low), float(high)
