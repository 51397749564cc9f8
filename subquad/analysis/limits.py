"""Typed access to ``limits.toml``, the one declared place of every gate's limit."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from subquad.errors import ConfigError
from subquad.model.sparsify import expected_active
from subquad.results.format import parse_context

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass(frozen=True)
class ExponentLimit:
    """Bounds on one fitted exponent kind (method, phase, quantity, axis, optionally c)."""

    name: str
    method: str
    phase: str
    quantity: str
    axis: str = "m"
    lo: float | None = None
    hi: float | None = None
    c: float | None = None
    why: str = ""

    def matches(self, method: str, phase: str, quantity: str, axis: str,
                context: str = "") -> bool:
        """Whether a fitted series is governed by this limit."""
        if (method, phase, quantity, axis) != (self.method, self.phase, self.quantity,
                                               self.axis):
            return False
        if self.c is None:
            return True
        c = parse_context(context).get("c")
        return c is not None and math.isclose(float(c), self.c, rel_tol=1e-9)

    def violated(self, ci_low: float, ci_high: float) -> bool:
        """True when the interval leaves the bounds (upper bound above max, lower below min)."""
        if not (math.isfinite(ci_low) and math.isfinite(ci_high)):
            return True
        return (self.hi is not None and ci_high > self.hi) or (
            self.lo is not None and ci_low < self.lo)

    def describe(self) -> str:
        """The bounds as text: ``<= 1.82``, ``>= 1``, or ``[1.98, 2.02]``."""
        if self.lo is None:
            return f"<= {self.hi:g}"
        if self.hi is None:
            return f">= {self.lo:g}"
        return f"[{self.lo:g}, {self.hi:g}]"


@dataclass(frozen=True)
class PhaseModel:
    """ALGORITHM.md section 5 model of one phase: work ~ m^m_power s(m)^s_power."""

    phase: str
    m_power: float
    s_power: float
    tolerance: float

    def exponent(self, ms: Sequence[float], c: float) -> float:
        """Least-squares log-log slope of the model over the grid ``ms`` (s = m Q(beta))."""
        lm = np.log(np.asarray(ms, dtype=float))
        ls = np.log([expected_active(int(m), c) for m in ms])
        slope_s = float(np.polyfit(lm, ls, 1)[0])
        return self.m_power + self.s_power * slope_s


@dataclass(frozen=True)
class Limits:
    """Every limit: exponent bounds, work-phase models, baseline rule, constant-factor rule."""

    exponents: tuple[ExponentLimit, ...]
    non_init_max: float
    models: dict[str, PhaseModel]
    baseline_slack: float
    baseline_phases: dict[str, tuple[str, ...]]
    factor_ratio: float
    factor_p: float
    factor_phase: str = "iteration"
    factor_normalize_by: str = ""
    #: self-check: a calibration kernel's exponent must lie within this of its known value
    calibration_tolerance: float = 0.15
    #: claim verdicts of the report ([claims] in limits.toml)
    claim_tolerance: float = 0.15
    claim_min_saving: float = 0.05
    claim_min_points: int = 6
    claim_min_decades: float = 1.0
    claim_grid_axes: tuple[str, ...] = ("m",)
    claim_activity_ratio: float = 1.5
    claim_same_rtol: float = 1e-4
    claim_converged_ratio: float = 1e-6
    #: model tier (no same-machine baseline): min width, ratio band, exponent tolerance
    model_min_m: float = 1024.0
    model_ratio: tuple[float, float] = (0.5, 2.0)
    model_exponent_tolerance: float = 0.15
    source: str = field(default="", compare=False)

    def exponent_limit(self, method: str, phase: str, quantity: str, axis: str = "m",
                       c: float | None = None) -> ExponentLimit:
        """The limit governing a series; ConfigError if limits.toml declares none."""
        ctx = "" if c is None else f"c={c}"
        for lim in self.exponents:
            if lim.matches(method, phase, quantity, axis, ctx):
                return lim
        raise ConfigError("limits", f"no [[exponent]] limit for {method} {phase} {quantity} "
                          f"in {axis}" + (f" at c = {c}" if c is not None else "")
                          + f" in {self.source}")

    def compared(self, phase: str, quantity: str) -> bool:
        """Whether a fitted series of this phase and quantity is compared with the baseline."""
        return phase in self.baseline_phases.get(quantity, ())

    def model(self, phase: str, update: str = "scatter") -> PhaseModel:
        """The work model of a subquad phase (update by mode: scatter or rowdense)."""
        key = f"update-{update}" if phase == "update" else phase
        if key not in self.models:
            raise ConfigError("limits", f"no [work.model.{key}] in {self.source}")
        return self.models[key]


def _num(table: dict, key: str, where: str, default: Any = ...) -> Any:
    """A finite number from a TOML table, or ConfigError naming where it is missing."""
    if key not in table:
        if default is not ...:
            return default
        raise ConfigError("limits", f"{where}: missing '{key}'")
    v = table[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ConfigError("limits", f"{where}: '{key}' must be a finite number, got {v!r}")
    return float(v)


def _exponent(entry: dict, i: int) -> ExponentLimit:
    where = f"[[exponent]] #{i + 1}"
    try:
        keys = {k: str(entry[k]) for k in ("method", "phase", "quantity")}
    except KeyError as exc:
        raise ConfigError("limits", f"{where}: missing {exc.args[0]!r}") from None
    lo, hi = _num(entry, "min", where, None), _num(entry, "max", where, None)
    if "target" in entry:
        t, tol = _num(entry, "target", where), _num(entry, "tolerance", where)
        lo, hi = t - tol, t + tol
    if lo is None and hi is None:
        raise ConfigError("limits", f"{where}: needs max, min, or target and tolerance")
    return ExponentLimit(str(entry.get("name", f"{keys['method']} {keys['phase']}")),
                         axis=str(entry.get("axis", "m")), lo=lo, hi=hi,
                         c=_num(entry, "c", where, None), why=str(entry.get("why", "")), **keys)


def parse_limits(doc: dict, source: str = "limits.toml") -> Limits:
    """Build ``Limits`` from a parsed TOML document, validating every field."""
    try:
        work, base, factor = doc["work"], doc["baseline"], doc["factor"]
    except KeyError as exc:
        raise ConfigError("limits", f"{source}: missing table [{exc.args[0]}]") from None
    claims = doc.get("claims", {})
    models = {name: PhaseModel(name, _num(t, "m_power", f"work.model.{name}"),
                               _num(t, "s_power", f"work.model.{name}"),
                               _num(t, "tolerance", f"work.model.{name}"))
              for name, t in work.get("model", {}).items()}
    return Limits(
        exponents=tuple(_exponent(e, i) for i, e in enumerate(doc.get("exponent", []))),
        non_init_max=_num(work, "non_init_max", "work"), models=models,
        baseline_slack=_num(base, "slack", "baseline"),
        baseline_phases={str(q): tuple(str(p) for p in ps)
                         for q, ps in base.get("phases", {"seconds": ["iteration"]}).items()},
        factor_ratio=_num(factor, "ratio", "factor"), factor_p=_num(factor, "p_value", "factor"),
        factor_phase=str(factor.get("phase", "iteration")),
        factor_normalize_by=str(factor.get("normalize_by", "")),
        calibration_tolerance=_num(doc.get("calibration", {}), "tolerance", "calibration",
                                   0.15),
        claim_tolerance=_num(claims, "tolerance", "claims", 0.15),
        claim_min_saving=_num(claims, "min_saving", "claims", 0.05),
        claim_min_points=int(_num(claims, "min_fit_points", "claims", 6)),
        claim_min_decades=_num(claims, "min_decades", "claims", 1.0),
        claim_grid_axes=tuple(str(a) for a in claims.get("grid_axes", ["m"])),
        claim_activity_ratio=_num(claims, "activity_ratio", "claims", 1.5),
        claim_same_rtol=_num(claims, "same_iterates_rtol", "claims", 1e-4),
        claim_converged_ratio=_num(claims, "converged_ratio", "claims", 1e-6),
        **_model_tier(doc.get("model", {})), source=source)


def _model_tier(t: dict) -> dict:
    """The [model] table (model tier of ``subquad check``), validated; defaults if absent."""
    lo, hi = _num(t, "ratio_low", "model", 0.5), _num(t, "ratio_high", "model", 2.0)
    if not 0 < lo < 1 < hi:
        raise ConfigError("limits", f"model: need 0 < ratio_low < 1 < ratio_high, got {lo}, "
                          f"{hi}")
    tol = _num(t, "exponent_tolerance", "model", 0.15)
    if tol < 0:
        raise ConfigError("limits", f"model: exponent_tolerance must be >= 0, got {tol}")
    return {"model_min_m": _num(t, "min_m", "model", 1024.0), "model_ratio": (lo, hi),
            "model_exponent_tolerance": tol}


def load_limits(path: str | Path | None = None) -> Limits:
    """The packaged limits.toml (cached), or the TOML file at ``path``."""
    if path is None:
        return _packaged()
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except OSError as exc:
        raise ConfigError("limits", f"cannot read {p}: {exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError("limits", f"{p} is not valid TOML: {exc}") from None
    return parse_limits(doc, str(p))


@lru_cache(maxsize=1)
def _packaged() -> Limits:
    text = resources.files("subquad.analysis").joinpath("limits.toml").read_text()
    return parse_limits(tomllib.loads(text), "subquad/analysis/limits.toml")
