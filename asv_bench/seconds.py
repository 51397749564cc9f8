"""Seconds exponents and the speed-up, one thread: machine-dependent and noisy.

One grid per commit (``setup_cache``, about two minutes on a 2-core VM): subquad (default
``--update auto``: scatter below m = 4096, fused from 4096 in float32) and dense-gn at
m = 1024, 2048, 4096, 8192, n = 16, d = 16, L = 2, c = 0.2, float32, in ROUNDS separate
processes of ITERS iterations each, the widths and methods interleaved so that a slow spell of
the machine lands on several widths rather than one. The first iteration of every process
(numba compile, cold caches) is dropped. An exponent is the slope of log(median seconds per
iteration) against log(m); its 95% interval is a percentile bootstrap over the iterations of
each width (fixed seed). asv has one value per benchmark, so each interval bound is its own
``track_*_ci_low`` / ``track_*_ci_high`` benchmark beside the value.
"""

from __future__ import annotations

from . import common

common.one_thread()

GRID = (1024, 2048, 4096, 8192)
METHODS = ("subquad", "dense-gn")
ROUNDS = 3
ITERS = 31
EXPONENT = "exponent x of seconds ~ m^x"
RATIO = "ratio (dense-gn / subquad seconds per iteration)"


def _measure() -> dict:
    samples: dict = {(method, m): [] for method in METHODS for m in GRID}
    for _ in range(ROUNDS):
        for m in GRID:
            for method in METHODS:
                rec = common.train_json(method, m, ITERS)
                samples[(method, m)] += common.iteration_seconds(rec)[1:]
    out: dict = {}
    for method in METHODS:
        point, low, high = common.bootstrap_slope(list(GRID),
                                                  [samples[(method, m)] for m in GRID])
        out[method] = {"exponent": point, "low": low, "high": high}
    top = GRID[-1]
    ratio, low, high = common.bootstrap_ratio(samples[("dense-gn", top)],
                                              samples[("subquad", top)])
    out["speedup"] = {"value": ratio, "low": low, "high": high, "m": top}
    return out


class SecondsExponents:
    timeout = 1200

    def setup_cache(self):
        return _measure()

    def track_subquad(self, r):
        return r["subquad"]["exponent"]

    track_subquad.unit = EXPONENT

    def track_subquad_ci_low(self, r):
        return r["subquad"]["low"]

    track_subquad_ci_low.unit = EXPONENT + ", 95% CI lower bound"

    def track_subquad_ci_high(self, r):
        return r["subquad"]["high"]

    track_subquad_ci_high.unit = EXPONENT + ", 95% CI upper bound"

    def track_dense_gn(self, r):
        return r["dense-gn"]["exponent"]

    track_dense_gn.unit = EXPONENT

    def track_dense_gn_ci_low(self, r):
        return r["dense-gn"]["low"]

    track_dense_gn_ci_low.unit = EXPONENT + ", 95% CI lower bound"

    def track_dense_gn_ci_high(self, r):
        return r["dense-gn"]["high"]

    track_dense_gn_ci_high.unit = EXPONENT + ", 95% CI upper bound"

    def track_speedup_m8192(self, r):
        return r["speedup"]["value"]

    track_speedup_m8192.unit = RATIO

    def track_speedup_m8192_ci_low(self, r):
        return r["speedup"]["low"]

    track_speedup_m8192_ci_low.unit = RATIO + ", 95% CI lower bound"

    def track_speedup_m8192_ci_high(self, r):
        return r["speedup"]["high"]

    track_speedup_m8192_ci_high.unit = RATIO + ", 95% CI upper bound"
