"""Counted-work exponents: deterministic, the same on every machine and every run.

``work`` in the train JSON counts the multiply-adds each phase really did, per iteration. Each
class runs its grid of widths once per commit (``setup_cache``), takes the mean work per
iteration at every m and fits log(work) against log(m) by least squares; the ``track_*``
benchmarks return the slopes. The values do not depend on timing, so asv's step detection and
``asv continuous`` see every change in them as a real change in what the code does or counts.

Grid: m = 1024, 1448, 2048, 2896 (factors of sqrt 2), n = 16, d = 16, L = 2, c = 0.2,
float32, 3 iterations, one thread. It starts at 1024 because ``--update auto`` picks
``rowdense`` while Q(beta) > 0.05 (m < 1024 here) and ends below 4096 because auto picks
``fused`` there (one W_l of 64 MiB), whose update is counted inside the forward: the default
series is the scatter update throughout. ``FusedWorkExponents`` follows the fused mode itself.
"""

from __future__ import annotations

from . import common

common.one_thread()

GRID = (1024, 1448, 2048, 2896)
ITERS = 3
UNIT = "exponent x of work ~ m^x"


def _grid(method: str, **options: object) -> dict:
    """Per phase (and 'iteration', their sum): mean counted work per iteration at each m."""
    out: dict = {"m": list(GRID)}
    for m in GRID:
        rec = common.train_json(method, m, ITERS, **options)
        for phase in common.PHASES:
            values = rec["work"].get(phase, [0.0])
            out.setdefault(phase, []).append(sum(values) / len(values))
        total = common.iteration_work(rec)
        out.setdefault("iteration", []).append(sum(total) / len(total))
    return out


class WorkExponents:
    """subquad with the default ``--update auto`` (the scatter update on this grid)."""

    timeout = 900

    def setup_cache(self):
        return _grid("subquad")

    def track_iteration(self, grid):
        return common.loglog_slope(grid["m"], grid["iteration"])

    track_iteration.unit = UNIT

    def track_forward(self, grid):
        return common.loglog_slope(grid["m"], grid["forward"])

    track_forward.unit = UNIT

    def track_update(self, grid):
        return common.loglog_slope(grid["m"], grid["update"])

    track_update.unit = UNIT

    def track_backward(self, grid):
        return common.loglog_slope(grid["m"], grid["backward"])

    track_backward.unit = UNIT


class FusedWorkExponents:
    """subquad with ``--update fused``: the update is applied (and counted) in the forward."""

    timeout = 900

    def setup_cache(self):
        return _grid("subquad", update="fused")

    def track_iteration(self, grid):
        return common.loglog_slope(grid["m"], grid["iteration"])

    track_iteration.unit = UNIT

    def track_forward(self, grid):
        return common.loglog_slope(grid["m"], grid["forward"])

    track_forward.unit = UNIT

    def track_backward(self, grid):
        return common.loglog_slope(grid["m"], grid["backward"])

    track_backward.unit = UNIT
