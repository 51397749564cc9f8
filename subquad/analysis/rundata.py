"""A run directory's tables, loaded through the results schema, and the selections that the
figures, the verdicts and the report share (which series, which context, which fitted row).

Nothing here draws: ``report`` and ``verdicts`` import this, never ``plots``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from subquad.analysis.stats import median_ci
from subquad.model.methods import method_names
from subquad.results.format import context_matches, fmt_number, parse_context
from subquad.results.rundir import RunDir
from subquad.vocabulary import SIZES

#: columns that never pool: a fit or a curve lives inside one value of each
CONTEXT_COLS = ("machine", "backend", "dtype", "threshold", "data")
MIN_POINTS = 3


@dataclass
class RunData:
    """The tables of one run directory; a table that is absent is ``None``.

    ``runs`` holds the usable rows with status ok; ``all_runs`` every row whatever its status
    (failed and censored cells); ``dropped`` the rows the loader could not use, with reasons.
    """

    rd: RunDir
    runs: pd.DataFrame | None = None
    all_runs: pd.DataFrame | None = None
    dropped: pd.DataFrame | None = None
    training: pd.DataFrame | None = None
    fits: pd.DataFrame | None = None
    local_slopes: pd.DataFrame | None = None
    crossover: pd.DataFrame | None = None
    selfcheck: pd.DataFrame | None = None
    claims: pd.DataFrame | None = None
    environment: dict = field(default_factory=dict)
    styles: dict[tuple[str, str], dict] = field(default_factory=dict)


    @property
    def run_dir(self) -> Path:
        return self.rd.path


def load_run(run_dir: RunDir | Path) -> RunData:
    """Every table of a run directory that exists (through its ``RunDir``: parsed once)."""
    rd = RunDir.of(run_dir)
    data = RunData(rd=rd)
    if rd.has("runs"):
        runs = rd.runs()
        data.all_runs = runs.frame
        data.dropped = runs.dropped
        ok = runs.ok
        data.runs = ok.reset_index(drop=True) if not ok.empty else None
    data.training = rd.table("training")
    for name in ("fits", "local_slopes", "crossover", "selfcheck", "claims"):
        table = rd.table(name)
        setattr(data, name, table if table is not None and not table.empty else None)
    data.environment = rd.environment()
    return data


def summarise(runs: pd.DataFrame, phase: str, quantity: str = "seconds") -> pd.DataFrame:
    """Median, interval and its coverage of ``quantity`` per (series, context, sizes) for one
    phase (seeds pooled)."""
    cols = [c for c in ("method", "options", *CONTEXT_COLS, *SIZES) if c in runs.columns]
    out_cols = [*cols, "median", "lo", "hi", "coverage", "samples"]
    sub = runs[(runs["phase"] == phase) & runs[quantity].notna()] if quantity in runs else None
    if sub is None or sub.empty:
        return pd.DataFrame(columns=out_cols)
    rows = []
    for key, grp in sub.groupby(cols, sort=True, dropna=False):
        ci = median_ci(grp[quantity])
        rows.append((*key, ci.median, ci.lo, ci.hi, ci.coverage, len(grp)))
    return pd.DataFrame(rows, columns=out_cols)


def context_values(text: str) -> dict[str, object]:
    """A context string with numbers as floats (for ``select_rows``)."""
    out: dict[str, object] = {}
    for k, v in parse_context(text).items():
        try:
            out[k] = float(v)
        except ValueError:
            out[k] = v
    return out


def sweeps(summary: pd.DataFrame, axis: str, min_points: int = MIN_POINTS
           ) -> list[tuple[dict[str, object], pd.DataFrame]]:
    """Groups where ``axis`` varies and everything else is fixed, most points first."""
    keys = [c for c in (*CONTEXT_COLS, *SIZES) if c in summary.columns and c != axis]
    if summary.empty:
        return []
    out = [(dict(zip(keys, key, strict=True)), grp)
           for key, grp in summary.groupby(keys, sort=True, dropna=False)
           if grp[axis].nunique() >= min_points]
    return sorted(out, key=lambda kv: (-kv[1][axis].nunique(), -len(kv[1])))


def main_context(runs: pd.DataFrame | None, axis: str = "m") -> dict[str, object] | None:
    """The fixed values of the longest ``axis`` sweep of the trained methods (None if none)."""
    if runs is None:
        return None
    summ = summarise(runs[runs["method"].isin(method_names())], "iteration")
    found = sweeps(summ, axis)
    return found[0][0] if found else None


def default_options(runs: pd.DataFrame | None, method: str, fixed: dict | None = None,
                    x: str = "m") -> str | None:
    """The options of a method's main variant: the one measured at the most ``x`` values
    (ties: by ``_UPDATE_PREFERENCE``, then by name)."""
    if runs is None:
        return None
    sel = runs[runs["method"] == method]
    if fixed:
        sel = select_rows(sel, fixed)
    if sel.empty:
        return None
    counts = sel.groupby("options")[x].nunique()
    return min(counts.index, key=lambda o: (-counts[o], _update_rank(o), o))


#: ties between variants measured at as many widths go to the default update, then the
#: paper's sparse scatter update (the lazy fold and the fused forward are alternatives)
_UPDATE_PREFERENCE = ("auto", "scatter", "rowdense", "fused", "lazy")


def _update_rank(options: str) -> int:
    update = parse_context(options).get("update", "")
    return _UPDATE_PREFERENCE.index(update) if update in _UPDATE_PREFERENCE else 0


def parse_range(text: str) -> tuple[float, float] | None:
    """'1024-32768', '[1024, 32768]' or '1024..32768' -> (1024.0, 32768.0); None if unparseable."""
    nums = re.findall(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?", str(text or ""))
    if len(nums) < 2:
        return None
    lo, hi = float(nums[0]), float(nums[-1])
    return (min(lo, hi), max(lo, hi))


#: fit kinds that only describe one memory regime or one segment (never a default choice)
REGIME_KINDS = ("regime", "segment-1", "segment-2")


def find_fit(fits: pd.DataFrame | None, method: str, options: str | None, phase: str,
             quantity: str, axis: str, fixed: dict[str, object], kind: str = "slope"
             ) -> pd.Series | None:
    """The fitted row of one series whose context matches ``fixed``: fit ``kind`` (default
    the all-widths slope, else a joint fit); a regime-aware kind only when asked for."""
    if fits is None:
        return None
    sel = fits[(fits["method"] == method) & (fits["phase"] == phase)
               & (fits["quantity"] == quantity) & (fits["axis"] == axis)]
    if options is not None and "options" in sel:
        sel = sel[sel["options"] == options]
    sel = same_context(sel, fixed)
    if sel.empty:
        return None
    if "fit" in sel:
        if (sel["fit"] == kind).any():
            sel = sel[sel["fit"] == kind]
        elif kind != "slope":
            return None
        else:
            sel = sel[~sel["fit"].isin(REGIME_KINDS)]
    return sel.iloc[0] if not sel.empty else None


def same_context(table: pd.DataFrame, fixed: dict[str, object]) -> pd.DataFrame:
    """Rows of a fits-like table whose machine, backend, dtype, threshold, data and context
    agree with ``fixed`` (an empty value on either side matches anything)."""
    for col in CONTEXT_COLS:
        if col in table and str(fixed.get(col, "") or ""):
            table = table[(table[col] == str(fixed[col])) | (table[col] == "")]
    if "context" in table:
        table = table[np.array([context_matches(c, fixed) for c in table["context"]], bool)]
    return table


def exponent_text(row: pd.Series | None) -> str:
    """'1.76 [1.70, 1.82]': exponent and interval of a fitted row ('' when absent)."""
    if row is None or not np.isfinite(row.get("exponent", np.nan)):
        return ""
    return f"{row['exponent']:.2f} [{row['ci_low']:.2f}, {row['ci_high']:.2f}]"


def context_title(fixed: dict[str, object], skip: Iterable[str] = ()) -> str:
    """'n=16, d=16, L=2, c=0.2; numpy float64' for a panel title."""
    sizes = [f"{k}={fmt_number(fixed[k])}" for k in SIZES if k in fixed and k not in skip]
    extra = [str(fixed[k]) for k in ("backend", "dtype", "threshold") if fixed.get(k)]
    return ", ".join(sizes) + ("; " + " ".join(extra) if extra else "")


def series_rows(runs: pd.DataFrame, method: str, options: str, fixed: dict | None = None,
                phase: str | None = None, m: float | None = None) -> pd.DataFrame:
    """Rows of one series (method, options), optionally only those of ``phase``, of the
    context ``fixed`` (``select_rows``) and at width ``m``."""
    sel = runs[(runs["method"] == method) & (runs["options"] == options)]
    if phase is not None:
        sel = sel[sel["phase"] == phase]
    if fixed:
        sel = select_rows(sel, fixed)
    if m is not None:
        sel = sel[np.isclose(sel["m"].astype(float), m)]
    return sel


def select_rows(df: pd.DataFrame, fixed: dict[str, object]) -> pd.DataFrame:
    """Rows of ``df`` whose columns equal the values of ``fixed`` (columns it lacks ignored)."""
    mask = np.ones(len(df), dtype=bool)
    for k, v in fixed.items():
        if k not in df.columns:
            continue
        col = df[k]
        number = pd.to_numeric(pd.Series([v]), errors="coerce").iloc[0]
        if pd.api.types.is_numeric_dtype(col) and pd.notna(number):
            mask &= np.isclose(col.to_numpy(float), float(number), rtol=1e-9, atol=1e-12)
        else:
            mask &= (col.astype(str) == str(v)).to_numpy()
    return df[mask]


