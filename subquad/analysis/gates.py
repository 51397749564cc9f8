"""Deterministic counted-work gates: per-phase work exponents in m of the real trainers.

Counted work (multiply-adds summed from the real active sets) does not depend on the machine,
so these gates run in ``make test`` (docs MEASUREMENT.md, "Gating regressions"); the limits
come from ``limits.toml``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from subquad.analysis.fit import fit_slope
from subquad.analysis.limits import ExponentLimit, Limits, load_limits
from subquad.model.train import TrainConfig, run_training
from subquad.model.trainer import PHASES
from subquad.results.format import fmt_number
from subquad.vocabulary import FAIL, PASS, UNDECIDED

#: the phases a work scan reports: the m^2 init, each iteration phase and their sum
SCAN_PHASES = ("init", *PHASES, "iteration")


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict: the measured value against its limit, with a readable detail."""

    name: str
    value: float
    limit: str
    passed: bool
    detail: str = ""
    baseline: float = math.nan
    #: False when the data could not decide the check (reported UNDECIDED; fails --strict)
    decided: bool = True

    @property
    def verdict(self) -> str:
        return UNDECIDED if not self.decided else (PASS if self.passed else FAIL)


@dataclass(frozen=True)
class WorkScan:
    """Median counted multiply-adds per iteration of every phase at each width of a grid."""

    method: str
    ms: tuple[int, ...]
    c: float
    L: int
    work: dict[str, np.ndarray]
    update_modes: tuple[str, ...]

    def exponent(self, phase: str) -> float:
        """Log-log slope of the phase's work in m; NaN when the phase did no work anywhere."""
        w = self.work[phase]
        if not np.any(w > 0):
            return math.nan
        if not np.all(w > 0):
            return math.inf  # work appears only at some widths: no power law
        fit = fit_slope(self.ms, [[v] for v in w], n_boot=1)
        return math.nan if fit is None else fit.exponent

    @property
    def exponents(self) -> dict[str, float]:
        return {p: self.exponent(p) for p in SCAN_PHASES}


def scan_work(method: str, ms: Sequence[int], n: int, L: int, c: float, iters: int, *,
              seed: int = 0, dtype: str = "float32", update: str = "auto",
              **options: object) -> WorkScan:
    """Train ``iters`` iterations at each width and keep the median work of every phase."""
    work: dict[str, list[float]] = {p: [] for p in SCAN_PHASES}
    modes = []
    for m in ms:
        cfg = TrainConfig(method=method, m=int(m), n=n, L=L, c=c, iters=iters, seed=seed,
                          dtype=dtype, update=update if method == "subquad" else "auto",
                          **options)
        out = run_training(cfg)
        per_iter = np.array([out["work"][p] for p in PHASES], dtype=float)  # phases x iters
        for p, row in zip(PHASES, per_iter):
            work[p].append(float(np.median(row)))
        work["iteration"].append(float(np.median(per_iter.sum(axis=0))))
        work["init"].append(float(out["init_work"]["madds"]))
        modes.append(str(out["config"].get("update", "")))
    return WorkScan(method, tuple(int(m) for m in ms), float(c), int(L),
                    {p: np.array(v) for p, v in work.items()}, tuple(modes))


def _bound(name: str, value: float, lim: ExponentLimit, detail: str) -> GateResult:
    """A point exponent (counted work has no interval) against declared bounds."""
    return GateResult(name, value, lim.describe(), not lim.violated(value, value), detail)


def gate_scan(scan: WorkScan, limits: Limits | None = None) -> list[GateResult]:
    """Every counted-work gate that applies to one method's scan."""
    lim = limits or load_limits()
    exps = scan.exponents
    grid = f"m={scan.ms[0]}..{scan.ms[-1]}, L={scan.L}, c={scan.c:g}"
    it = lim.exponent_limit(scan.method, "iteration", "work", c=scan.c)
    out = [_bound(f"{scan.method} iteration work exponent", exps["iteration"], it,
                  f"{grid}; {it.why}")]
    if scan.method != "subquad":
        return out
    out.append(_bound("subquad init work exponent", exps["init"],
                      lim.exponent_limit("subquad", "init", "work"), f"{grid}; the m^2 phase"))
    for phase in PHASES:
        e = exps[phase]
        if math.isnan(e):
            out.append(GateResult(f"subquad {phase}: not m^2", e, "skipped", True,
                                  f"no work at any m ({grid})"))
            continue
        out.append(GateResult(f"subquad {phase}: not m^2", e, f"<= {lim.non_init_max:g}",
                              e <= lim.non_init_max, "init must be the only m^2 phase"))
        out.append(_model_gate(scan, phase, e, lim))
    return out


def _model_gate(scan: WorkScan, phase: str, value: float, lim: Limits) -> GateResult:
    """The phase's exponent against its ALGORITHM.md section 5 model over the same grid."""
    name = f"subquad {phase} work vs model"
    modes = sorted(set(scan.update_modes))
    if phase == "update" and len(modes) != 1:
        return GateResult(name, value, "skipped", True,
                          f"update mode switches across the grid ({', '.join(modes)})")
    if phase == "fold":
        return GateResult(name, value, "skipped", True, "lazy fold: amortised, no power law")
    if phase in ("forward", "backward") and "lazy" in modes:
        return GateResult(name, value, "skipped", True,
                          "lazy adds the r-column correction U V^T h: no single power law")
    model = lim.model(phase, modes[0] if modes else "scatter")
    target = model.exponent(scan.ms, scan.c)
    passed = abs(value - target) <= model.tolerance
    return GateResult(name, value, f"{target:.3f} +- {model.tolerance:g}", passed,
                      f"model m^{model.m_power:g} s^{model.s_power:g}, s = m Q(sqrt(2c ln m))")


def format_gates(results: Sequence[GateResult]) -> str:
    """A plain-text table of gate results (check, value, baseline, limit, verdict, detail)."""
    rows = [(r.name, fmt_number(r.value, ".4g", "-"), fmt_number(r.baseline, ".4g", "-"),
             r.limit, r.verdict, r.detail) for r in results]
    head = ("check", "value", "baseline", "limit", "verdict", "detail")
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip()
             for row in (head, *rows)]
    return "\n".join(lines)
