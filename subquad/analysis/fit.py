"""Exponents with bootstrap intervals, local slopes, crossover widths and the self-check.

Pure functions on the tidy ``runs.csv`` table (docs/DESIGN.md, "Result tables"); the rules are
those of docs MEASUREMENT.md, "Fitting". ``fit_run`` reads a run directory (or a
pytest-benchmark JSON file) and writes ``fits.csv``, ``local_slopes.csv``, ``crossover.csv`` and
``selfcheck.csv`` beside it.

Series. Only rows with status ``ok`` are used, as validated by ``RunDir.runs`` (which
reports every row it drops, written to ``dropped.csv``). A series is one (machine, method,
label, options, backend, dtype, threshold, data, phase) -- ``options`` holds every option that
changes the computation, so two variants are never pooled -- and, for a swept axis in {m, n,
d}, one set of fixed values of the other cell parameters (n, d, L, c minus the axis); those
fixed values form ``context``, e.g. ``n=16;d=16;L=2;c=0.2`` (missing parameters left out).
Different ``machine`` values are never pooled: timings of two machines are different series,
compared by exponent, never by seconds.
Seeds (and any other non-key columns) are pooled: every ok sample at one axis value belongs to
the same point. A series is fitted only if it has at least 3 distinct axis values.

Estimates. A point's value is the median of its samples; ``seconds``, ``work`` and ``bytes`` are
all treated alike (counted work is deterministic, so its medians are exact). The exponent is the
least-squares slope of log(median) against log(axis). Its interval is a percentile bootstrap:
each replicate resamples the samples within every point (with replacement), takes the medians
and refits; B = 1000 replicates by default, seeded per series from (seed, series key) so a result
does not depend on which other series are in the table. For deterministic counts every replicate
equals the point estimate, so the interval collapses to it.

Fit window. ``window="all"`` (default) fits every point. ``window="auto"`` drops leading points
while fixed overheads still dominate: while at least 4 points remain, the first point is dropped
if the slope of its interval is below half the least-squares slope of the remaining points.
``min_axis={"m": 1024}`` drops points below a fixed value first. The column ``window`` names the
rule (``all``, ``auto``, ``min``, ``min+auto``) and ``fit_range`` the axis values actually used.

Local slopes. Between every pair of neighbouring points of a series (all points, whatever the
fit window), with intervals from the same bootstrap replicates as the series' exponent; they
expose cache edges and the sparse/dense switch.

Joint fit. Over the cells of one (machine, method, options, backend, dtype, threshold, data,
phase, L, c) group in which at least two of m, n, d take several values (a small factorial, or
one-axis sweeps that share a centre), log q = log C + a log m + b log n + e log d is fitted by
least squares on the cell medians, with the same bootstrap; one row per varying axis.

Crossover. Each ``subquad`` series on axis m, phase ``iteration`` (quantities seconds and work), is
paired with every ``dense-gn`` series of the same machine, backend and dtype whose context,
threshold and data agree (a value missing on one side matches anything). On their common widths
r(m) = log(t_dense / t_subquad): m* is the first crossing of r from <= 0 to > 0, interpolated
linearly in log m (kind ``interpolated``); if r > 0 at every m, subquad is faster everywhere and
m* is the smallest common m (``below range``); otherwise (``none in range``) m* is extrapolated
from the two fitted power laws, i.e. the root of the least-squares line of r in log m, when the
dense exponent is the larger (kind ``extrapolated``), else m* is empty. The interval comes from
the same per-point bootstrap of both series (replicates that never cross count as m* = inf).
The speed-up at the largest common m is the ratio of medians dense / subquad, with its interval.

Self-check. Methods ``calib-axpy`` (expected exponent 1 in m) and ``calib-gemv`` (expected 2),
phase ``kernel``, quantity seconds: ``ok`` when |exponent - expected| <= the tolerance of
``[calibration]`` in limits.toml (0.15); the run is
``trustworthy`` when every calibration series is ok, and unknown (empty) when none was run.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from subquad.analysis.limits import load_limits
from subquad.errors import ConfigError
from subquad.results.format import context_string, fmt_number, parse_context
from subquad.results.rundir import RunDir
from subquad.results.runs import Runs, validate_runs
from subquad.results.schema import TABLES
from subquad.vocabulary import CALIBRATION, FIT_AXES, QUANTITIES, SIZES, VARIANT

#: what a series is never pooled across (besides the other sizes, see ``series_columns``)
SERIES_KEYS = ["machine", *VARIANT, "phase"]
CROSSOVER_QUANTITIES = ("seconds", "work")
WINDOWS = ("all", "auto")
#: regime-aware fits (docs/MACHINE_MODEL.md, ``rundata.REGIME_KINDS``): enough widths for them
REGIME_MIN_POINTS = 5
REGIME_MIN_DECADES = 0.5
_MAX_DRAWS_PER_CHUNK = 4_000_000


@dataclass(frozen=True)
class FitOptions:
    """How exponents are estimated: interval level, bootstrap size, seed and fit window."""

    confidence: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    window: str = "all"
    min_axis: Mapping[str, float] | None = None
    #: bytes of the last cache level per machine id (regime fits; none without it)
    last_cache: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ConfigError("confidence", f"must lie in (0, 1), got {self.confidence!r}")
        if int(self.n_boot) != self.n_boot or self.n_boot < 1:
            raise ConfigError("n_boot", f"must be a positive integer, got {self.n_boot!r}")
        if self.window not in WINDOWS:
            raise ConfigError("window", f"must be one of {WINDOWS}, got {self.window!r}")
        for axis in self.min_axis or {}:
            if axis not in FIT_AXES:
                raise ConfigError("min_axis", f"keys must be axes {FIT_AXES}, got {axis!r}")


@dataclass(frozen=True)
class SlopeFit:
    """One fitted exponent: point estimate, interval, axis values used and the window rule."""

    exponent: float
    ci_low: float
    ci_high: float
    intercept: float
    x: np.ndarray
    window: str


@dataclass(frozen=True)
class _Series:
    """The samples of one series on one axis, padded per point (NaN beyond each count)."""

    keys: dict
    axis: str
    quantity: str
    x: np.ndarray
    Y: np.ndarray
    counts: np.ndarray
    context: str
    #: per point: the update mode(s) that ran there (``update=auto`` resolves by m)
    modes: tuple[str, ...] = ()


class FitPaths(dict):
    """The written tables by name (fits, local_slopes, crossover, selfcheck, dropped), the
    run's flag and what the loader dropped.

    ``trustworthy`` is True/False from the calibration self-check, None when none was run;
    ``dropped`` counts the runs.csv rows that could not be used, per reason.
    """

    trustworthy: bool | None = None
    dropped: dict[str, int]


# ----------------------------------------------------------------------------- input tables


def read_benchmark_json(path: Path | str) -> Runs:
    """A pytest-benchmark JSON file as a runs table (one row per round; phase ``kernel``).

    Each benchmark's ``extra_info`` gives ``kernel`` (the method; the benchmark name if absent),
    ``m``, ``n``, ``d``, ``L``, ``c``, ``dtype``, ``backend`` and optionally ``machine``, ``work``,
    ``bytes``. ``stats.data`` holds per-round seconds per iteration (saved with
    ``--benchmark-save-data``); without it ``stats.median`` is used as a single sample.
    """
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError("benchmark_json", f"cannot read {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise ConfigError("benchmark_json", f"{path} has no 'benchmarks' list")
    machine = _benchmark_machine(doc.get("machine_info") or {})
    rows = [row for bench in doc["benchmarks"] for row in _benchmark_rows(bench, machine)]
    return validate_runs(pd.DataFrame(rows, columns=TABLES["runs"].columns))


def _benchmark_machine(info: Mapping) -> str:
    """A hostname-independent machine id from pytest-benchmark's ``machine_info``."""
    cpu = info.get("cpu") or {}
    text = "|".join(
        str(v) for v in (cpu.get("brand_raw", ""), cpu.get("count", ""), info.get("machine", ""))
    )
    return f"bench-{zlib.crc32(text.encode()):08x}"


def _benchmark_rows(bench: Mapping, machine: str) -> list[dict]:
    """The runs rows of one pytest-benchmark entry, one per recorded round."""
    info = bench.get("extra_info") or {}
    stats = bench.get("stats") or {}
    data = stats.get("data") or ([stats["median"]] if "median" in stats else [])
    base = {
        "experiment": "pytest-benchmark", "cell": bench.get("fullname", bench.get("name", "")),
        "machine": info.get("machine", machine), "method": info.get("kernel", bench.get("name")),
        "backend": info.get("backend", "numpy"), "dtype": info.get("dtype", "float64"),
        "iters": stats.get("iterations", 1), "phase": "kernel", "status": "ok",
        **{k: info.get(k, np.nan) for k in ("m", "n", "d", "L", "c", "work", "bytes", "seed")},
    }
    return [{**base, "sample": i, "seconds": float(t)} for i, t in enumerate(data)]


# ---------------------------------------------------------------------------------- series


def _fit_range(axis: str, x: np.ndarray) -> str:
    """``axis=lo..hi`` of the axis values used."""
    return f"{axis}={fmt_number(x.min())}..{fmt_number(x.max())}"


def _pad(point: np.ndarray, values: np.ndarray, n_points: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples grouped by point index into a (points x max count) array padded with NaN."""
    order = np.argsort(point, kind="stable")
    point, values = point[order], values[order]
    counts = np.bincount(point, minlength=n_points)
    rank = np.arange(len(point)) - (np.cumsum(counts) - counts)[point]
    Y = np.full((n_points, max(int(counts.max()), 1)), np.nan)
    Y[point, rank] = values
    return Y, counts


def _positive_axes(df: pd.DataFrame, axes: Sequence[str]) -> pd.DataFrame:
    """Rows whose axis values are positive and finite (log-log needs them)."""
    v = df[list(axes)].to_numpy(float)
    return df[(np.isfinite(v) & (v > 0)).all(axis=1)]


def _points(
    g: pd.DataFrame, point_cols: Sequence[str], quantity: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct points of a group (sorted) and their padded samples of one quantity.

    Samples that are not positive and finite are left out (log-log needs them positive).
    """
    q = g[quantity].to_numpy()
    use = np.isfinite(q) & (q > 0)
    coords = g[list(point_cols)].to_numpy()[use]
    if len(point_cols) == 1:
        pts, inverse = np.unique(coords[:, 0], return_inverse=True)
    else:
        pts, inverse = np.unique(coords, axis=0, return_inverse=True)
    if len(pts) == 0:
        return pts, np.empty((0, 1)), np.zeros(0, dtype=np.intp)
    Y, counts = _pad(inverse.ravel(), q[use], len(pts))
    return pts, Y, counts


def series_columns(axis: str) -> tuple[list[str], list[str]]:
    """The columns a series on ``axis`` is keyed by, and which of them form its context.

    The one place that decides what is pooled: a series lives inside one value of every
    SERIES_KEYS column (machine, variant: label and options, backend, dtype, ...) and of every
    other size; only seeds and samples are pooled. Extend here to split series further.
    """
    fixed = [p for p in SIZES if p != axis]
    return SERIES_KEYS + fixed, fixed


def _modes(g: pd.DataFrame, axis: str, x: np.ndarray) -> tuple[str, ...]:
    """The resolved update mode(s) at each axis value of a series ('' when not recorded)."""
    by = g.groupby(axis)["update_resolved"].agg(lambda v: "+".join(sorted(set(v) - {""})))
    return tuple(str(by.get(v, "")) for v in x)


def _iter_series(
    ok: pd.DataFrame, axis: str, quantities: Sequence[str], min_points: int = 3
) -> Iterator[_Series]:
    """Every series (per quantity) with at least ``min_points`` distinct values of ``axis``."""
    keys, fixed = series_columns(axis)
    for key, g in _positive_axes(ok, [axis]).groupby(keys, dropna=False, sort=True):
        kd = dict(zip(keys, key))
        context = context_string({p: kd[p] for p in fixed})
        for quantity in quantities:
            x, Y, counts = _points(g, [axis], quantity)
            if len(x) >= min_points:
                yield _Series(kd, axis, quantity, x, Y, counts, context, _modes(g, axis, x))


def _keys_text(keys: dict) -> str:
    """'machine=...;method=...;...' of series keys (a label equal to the method left out)."""
    return ";".join(f"{k}={fmt_number(v)}" for k, v in keys.items()
                    if k != "label" or v != keys["method"])


def _series_key(s: _Series, purpose: str) -> str:
    """A stable text key of a series, used to seed its bootstrap."""
    return f"{purpose}|{s.axis}|{s.quantity}|{_keys_text(s.keys)}"


def _rng(seed: int, key: str) -> np.random.Generator:
    """A generator seeded by (seed, key), so each series' bootstrap is reproducible alone."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode())])


# ------------------------------------------------------------------------------- bootstrap


def _sorted_median(s: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Medians along the last axis of rows sorted ascending, with ``counts`` valid entries each."""
    cols = np.arange(len(counts))
    lo = s[..., cols, (counts - 1) // 2]
    hi = s[..., cols, counts // 2]
    return 0.5 * (lo + hi)


def _medians(
    Y: np.ndarray, counts: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Row 0: medians of the measured samples; rows 1..B: medians of bootstrap resamples.

    Resampling is within each point, with replacement, the same number of samples as measured.
    Both rows come from one code path, so deterministic samples give bitwise-equal rows.
    """
    P, S = Y.shape
    valid = np.arange(S) < counts[:, None]
    padded = np.where(valid, Y, np.inf)  # +inf sorts after every real sample
    out = np.empty((n_boot + 1, P))
    out[0] = _sorted_median(np.sort(padded, axis=-1), counts)
    rows = np.arange(P)[:, None]
    chunk = max(1, _MAX_DRAWS_PER_CHUNK // (P * S))
    for start in range(0, n_boot, chunk):
        b = min(chunk, n_boot - start)
        idx = (rng.random((b, P, S)) * counts[:, None]).astype(np.intp)
        draws = np.where(valid, padded[rows, idx], np.inf)
        draws.sort(axis=-1)
        out[1 + start : 1 + start + b] = _sorted_median(draws, counts)
    return out


def _ols(lx: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope and intercept of each row of ``ly`` against ``lx``."""
    xc = lx - lx.mean()
    slope = (ly * xc).sum(axis=-1) / (xc * xc).sum()
    return slope, ly.mean(axis=-1) - slope * lx.mean()


def _interval(boot: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates along axis 0."""
    alpha = 1.0 - confidence
    lo, hi = np.quantile(boot, [alpha / 2, 1 - alpha / 2], axis=0)
    return lo, hi


def _window_start(
    x: np.ndarray, lmed: np.ndarray, window: str, min_x: float | None
) -> tuple[int, str]:
    """Index of the first point to fit and the name of the rule that chose it."""
    start, names = 0, []
    if min_x is not None:
        start = int(np.searchsorted(x, min_x, side="left"))
        names.append("min")
    if window == "auto":
        names.append("auto")
        lx = np.log(x)
        while len(x) - start >= 4:
            first = (lmed[start + 1] - lmed[start]) / (lx[start + 1] - lx[start])
            rest = _ols(lx[start + 1 :], lmed[start + 1 :])[0]
            if not (rest > 0 and first < 0.5 * rest):
                break
            start += 1
    return start, "+".join(names) or "all"


def _slope_fit(
    x: np.ndarray, meds: np.ndarray, opts: FitOptions, min_x: float | None,
    single: bool = False, rng: np.random.Generator | None = None,
) -> SlopeFit | None:
    """Exponent and interval from medians (row 0 measured, others bootstrap); None if < 3 points.

    ``single``: every point has one sample (e.g. the init phase), so resampling within points
    cannot see any noise; the interval then comes from a residual bootstrap of the fit.
    """
    lmeds = np.log(meds)
    start, window = _window_start(x, lmeds[0], opts.window, min_x)
    if len(x) - start < 3:
        return None
    if single:
        lmeds = _residual_resamples(np.log(x[start:]), lmeds[0, start:], lmeds.shape[0] - 1,
                                    rng or _rng(opts.seed, "residual"))
        start = 0
        x = x[-lmeds.shape[1]:]
    slope, intercept = _ols(np.log(x[start:]), lmeds[:, start:])
    lo, hi = _interval(slope[1:], opts.confidence)
    return SlopeFit(float(slope[0]), float(lo), float(hi), float(intercept[0]), x[start:], window)


def _residual_resamples(lx: np.ndarray, ly: np.ndarray, n_boot: int,
                        rng: np.random.Generator) -> np.ndarray:
    """Row 0: ly; rows 1..B: the OLS fit plus resampled (leverage-free) residuals."""
    slope, intercept = _ols(lx, ly[None, :])
    fitted = intercept[0] + slope[0] * lx
    resid = ly - fitted
    resid = resid * np.sqrt(len(lx) / max(len(lx) - 2, 1))  # undo the fit's shrinkage
    draws = rng.integers(0, len(lx), size=(n_boot, len(lx)))
    return np.vstack([ly, fitted + resid[draws]])


def fit_slope(
    x: Sequence[float],
    samples: Sequence[Sequence[float]],
    *,
    confidence: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    window: str = "all",
    min_x: float | None = None,
) -> SlopeFit | None:
    """Exponent of one series given its axis values and the raw samples at each (None if < 3).

    The building block of ``fit_exponents``, usable on its own (e.g. to test counted work).
    """
    opts = FitOptions(confidence, n_boot, seed, window)
    xs = np.asarray(x, dtype=float)
    if len(xs) != len(samples) or np.any(xs <= 0) or np.any(np.diff(xs) <= 0):
        raise ConfigError("x", "must be positive, strictly increasing, one value per sample list")
    vals = [np.asarray(s, dtype=float) for s in samples]
    if any(len(v) == 0 or not np.all(np.isfinite(v) & (v > 0)) for v in vals):
        raise ConfigError("samples", "every point needs at least one positive, finite sample")
    point = np.repeat(np.arange(len(vals)), [len(v) for v in vals])
    Y, counts = _pad(point, np.concatenate(vals), len(vals))
    meds = _medians(Y, counts, opts.n_boot, _rng(seed, "fit_slope"))
    return _slope_fit(xs, meds, opts, min_x)


# ------------------------------------------------------------------------- slopes and fits


def _mode_text(modes: Sequence[str]) -> str:
    """'scatter', or 'rowdense->scatter' where the resolved update changes along the series."""
    seq = [m for i, m in enumerate(modes) if m and (i == 0 or m != modes[i - 1])]
    return "->".join(dict.fromkeys(seq)) if len(set(seq)) > 1 else (seq[0] if seq else "")


def _series_ids(s: _Series, modes: Sequence[str] | None = None) -> dict:
    """The identifying columns of a series' output rows."""
    ids = {c: s.keys[c] for c in SERIES_KEYS}
    return ids | {"quantity": s.quantity, "axis": s.axis, "context": s.context,
                  "update_resolved": _mode_text(s.modes if modes is None else modes)}


def _modes_at(s: _Series, x: np.ndarray) -> list[str] | None:
    """The series' update modes at the axis values ``x`` (None when not recorded)."""
    return [m for m, xi in zip(s.modes, s.x) if xi in x] if s.modes else None


def _fit_row(s: _Series, x: np.ndarray, fit: str, exponent: float, lo: float, hi: float,
             **extra) -> dict:
    """A ``fits.csv`` row of kind ``fit`` of a series over its axis values ``x``."""
    return _series_ids(s, _modes_at(s, x)) | {
        "fit": fit, "exponent": exponent, "ci_low": lo, "ci_high": hi, "n_points": len(x),
        "fit_range": _fit_range(s.axis, x)} | extra


def _local_rows(s: _Series, meds: np.ndarray, opts: FitOptions) -> list[dict]:
    """``local_slopes.csv`` rows: slopes between neighbouring points with bootstrap intervals."""
    slopes = np.diff(np.log(meds), axis=1) / np.diff(np.log(s.x))
    lo, hi = _interval(slopes[1:], opts.confidence)
    modes = s.modes or ("",) * len(s.x)
    return [
        _series_ids(s, modes[i:i + 2]) | {"x_lo": s.x[i], "x_hi": s.x[i + 1],
                                          "slope": slopes[0, i], "ci_low": lo[i],
                                          "ci_high": hi[i]}
        for i in range(len(s.x) - 1)
    ]


def _slopes_and_locals(ok: pd.DataFrame, opts: FitOptions) -> tuple[list[dict], list[dict]]:
    """Slope fit rows and local-slope rows of every series, sharing one bootstrap per series."""
    fits, locals_ = [], []
    for axis in FIT_AXES:
        min_x = (opts.min_axis or {}).get(axis)
        for s in _iter_series(ok, axis, QUANTITIES):
            rng = _rng(opts.seed, _series_key(s, ""))
            meds = _medians(s.Y, s.counts, opts.n_boot, rng)
            fit = _slope_fit(s.x, meds, opts, min_x, single=bool(np.all(s.counts == 1)),
                             rng=rng)
            if fit is not None:
                fits.append(_fit_row(s, fit.x, "slope", fit.exponent, fit.ci_low, fit.ci_high,
                                     intercept=fit.intercept, window=fit.window))
            locals_.extend(_local_rows(s, meds, opts))
            if axis == "m" and s.quantity == "seconds":
                keep = s.x >= min_x if min_x else np.ones(len(s.x), bool)  # same window
                fits.extend(_regime_rows(_restrict(s, keep), meds[:, keep], opts))
    return fits, locals_


def _regime_rows(s: _Series, meds: np.ndarray, opts: FitOptions) -> list[dict]:
    """Single-regime fit (weights beyond the last cache) and two-segment fit of a series."""
    rows = []
    llc = (opts.last_cache or {}).get(str(s.keys["machine"]))
    isz = 8 if str(s.keys["dtype"]) == "float64" else 4
    if llc:
        beyond = s.x * s.x * isz > llc
        if beyond.sum() >= 3:
            lm = np.log(meds[:, beyond])
            slope, icpt = _ols(np.log(s.x[beyond]), lm)
            lo, hi = _interval(slope[1:], opts.confidence)
            rows.append(_fit_row(s, s.x[beyond], "regime", slope[0], lo, hi, intercept=icpt[0],
                                 window=f"m^2 x {isz} B > last cache {llc / 2**20:g} MiB"))
    seg = two_segment(s.x, np.log(meds))
    if seg is not None:
        bp, s1, s2 = seg
        (blo, bhi), ci1, ci2 = (_interval(v[1:], opts.confidence) for v in (bp, s1, s2))
        for k, (v, (lo, hi)) in enumerate(((s1, ci1), (s2, ci2)), start=1):
            x = s.x[s.x <= bp[0]] if k == 1 else s.x[s.x >= bp[0]]
            rows.append(_fit_row(s, x, f"segment-{k}", v[0], lo, hi, window="two-segment",
                                 breakpoint=bp[0], breakpoint_ci_low=blo,
                                 breakpoint_ci_high=bhi))
    return rows


def two_segment(x: np.ndarray, ly: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """Continuous two-segment log-log fit of every row of ``ly`` (row 0 measured, the rest
    bootstrap replicates): (breakpoint, slope below, slope above) per row; None under 5 points.

    The breakpoint is the interior width minimising the squared error of
    log y = a + b log x + c max(0, log x - log x_b), so slopes are b and b + c.
    """
    if len(x) < REGIME_MIN_POINTS:
        return None
    lx = np.log(np.asarray(x, dtype=float))
    best = np.full(ly.shape[0], np.inf)
    out = [np.full(ly.shape[0], np.nan) for _ in range(3)]
    for j in range(2, len(lx) - 2):  # at least 3 points on each side (sharing the break)
        X = np.column_stack([np.ones_like(lx), lx, np.maximum(0.0, lx - lx[j])])
        coef = ly @ np.linalg.pinv(X).T
        sse = ((ly - coef @ X.T) ** 2).sum(axis=1)
        better = sse < best
        best = np.where(better, sse, best)
        for arr, val in zip(out, (np.full(len(sse), x[j]), coef[:, 1], coef[:, 1] + coef[:, 2])):
            arr[better] = val[better]
    return tuple(out)


def _joint_rows(ok: pd.DataFrame, opts: FitOptions) -> list[dict]:
    """``fits.csv`` rows (fit = joint) of log q = log C + a log m + b log n + e log d."""
    rows = []
    keys = SERIES_KEYS + ["L", "c"]
    for key, g in _positive_axes(ok, FIT_AXES).groupby(keys, dropna=False, sort=True):
        for quantity in QUANTITIES:
            rows.extend(_joint_group(dict(zip(keys, key)), g, quantity, opts))
    return rows


def _joint_group(kd: dict, g: pd.DataFrame, quantity: str, opts: FitOptions) -> list[dict]:
    """Joint-fit rows of one group, or none if fewer than two axes vary or the fit is singular."""
    pts, Y, counts = _points(g, FIT_AXES, quantity)
    varying = [i for i in range(len(FIT_AXES)) if len(np.unique(pts[:, i])) > 1] if len(pts) else []
    X = np.column_stack([np.ones(len(pts))] + [np.log(pts[:, i]) for i in varying])
    if len(varying) < 2 or len(pts) <= X.shape[1] or np.linalg.matrix_rank(X) < X.shape[1]:
        return []
    seed_key = f"joint|{quantity}|{_keys_text(kd)}"
    lmeds = np.log(_medians(Y, counts, opts.n_boot, _rng(opts.seed, seed_key)))
    coef = (lmeds[:, None, :] * np.linalg.pinv(X)[None, :, :]).sum(axis=-1)
    lo, hi = _interval(coef[1:], opts.confidence)
    fixed = {FIT_AXES[i]: pts[0, i] for i in range(len(FIT_AXES)) if i not in varying}
    context = context_string(fixed | {"L": kd["L"], "c": kd["c"]})
    fit_range = ";".join(_fit_range(FIT_AXES[i], pts[:, i]) for i in varying)
    base = {c: kd[c] for c in SERIES_KEYS} | {
        "quantity": quantity, "fit": "joint", "n_points": len(pts), "fit_range": fit_range,
        "context": context, "intercept": coef[0, 0], "window": "all",
        "update_resolved": "+".join(sorted(set(g["update_resolved"]) - {""})),
    }
    return [
        base | {"axis": FIT_AXES[i], "exponent": coef[0, j + 1], "ci_low": lo[j + 1],
                "ci_high": hi[j + 1]}
        for j, i in enumerate(varying)
    ]


def _ok_rows(runs: pd.DataFrame | Runs) -> pd.DataFrame:
    """The usable rows with status ok (a raw frame is validated first)."""
    return (runs if isinstance(runs, Runs) else validate_runs(runs)).ok


def fit_exponents(runs: pd.DataFrame | Runs, **options) -> pd.DataFrame:
    """The ``fits.csv`` table: one-axis slopes (fit = slope) and joint fits (fit = joint).

    ``options`` are those of ``FitOptions`` (confidence, n_boot, seed, window, min_axis).
    """
    opts = FitOptions(**options)
    ok = _ok_rows(runs)
    return TABLES["fits"].frame(_slopes_and_locals(ok, opts)[0] + _joint_rows(ok, opts))


def local_slopes(runs: pd.DataFrame | Runs, **options) -> pd.DataFrame:
    """The ``local_slopes.csv`` table: slope between each pair of neighbouring axis points."""
    opts = FitOptions(**options)
    return TABLES["local_slopes"].frame(_slopes_and_locals(_ok_rows(runs), opts)[1])


# ------------------------------------------------------------------------------- crossover


def _compatible(a: _Series, b: _Series) -> bool:
    """Whether two series describe the same setting (machine, backend, dtype, context, ...)."""
    if any(a.keys[k] != b.keys[k] for k in ("machine", "backend", "dtype")):
        return False
    for k in ("threshold", "data"):
        if a.keys[k] and b.keys[k] and a.keys[k] != b.keys[k]:
            return False
    ca, cb = parse_context(a.context), parse_context(b.context)
    return all(ca[k] == cb[k] for k in ca.keys() & cb.keys())


def _restrict(s: _Series, keep: np.ndarray) -> _Series:
    """The series limited to its points where the mask ``keep`` holds."""
    modes = tuple(np.asarray(s.modes, dtype=object)[keep]) if s.modes else ()
    return replace(s, x=s.x[keep], Y=s.Y[keep], counts=s.counts[keep], modes=modes)


def _crossing(lr: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row of log-ratios at widths ``m``: m* and its kind code (0 interpolated, 1 below
    range, 2 extrapolated, 3 none in range); m* is +inf where no crossing exists."""
    lm = np.log(m)
    rows = np.arange(lr.shape[0])
    up = (lr[:, :-1] <= 0) & (lr[:, 1:] > 0)
    j = up.argmax(axis=1)
    r0, r1 = lr[rows, j], lr[rows, j + 1]
    slope, intercept = _ols(lm, lr)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        interp = np.exp(lm[j] + (-r0) * (lm[j + 1] - lm[j]) / (r1 - r0))
        extrap = np.where(slope > 0, np.exp(-intercept / slope), np.inf)
    below = (lr > 0).all(axis=1)
    has = up.any(axis=1)
    value = np.where(has, interp, np.where(below, m[0], extrap))
    kind = np.where(has, 0, np.where(below, 1, np.where(np.isfinite(extrap), 2, 3)))
    return value, kind


_KINDS = ("interpolated", "below range", "extrapolated", "none in range")


def _m_star_interval(m_star: np.ndarray, confidence: float) -> tuple[float, float, float]:
    """m* of row 0 and a nearest-rank bootstrap interval (inf kept); all NaN when no m*."""
    if not np.isfinite(m_star[0]):
        return np.nan, np.nan, np.nan
    alpha = 1.0 - confidence
    lo = np.quantile(m_star[1:], alpha / 2, method="lower")
    hi = np.quantile(m_star[1:], 1 - alpha / 2, method="higher")
    return float(m_star[0]), float(lo), float(hi)


def _crossover_row(sub: _Series, dense: _Series, opts: FitOptions) -> dict | None:
    """One ``crossover.csv`` row of a subquad series against its dense baseline."""
    common = np.intersect1d(sub.x, dense.x)
    if len(common) < 2:
        return None
    sub, dense = _restrict(sub, np.isin(sub.x, common)), _restrict(dense, np.isin(dense.x, common))
    key = _series_key(sub, "crossover") + "||" + _series_key(dense, "")
    rng = _rng(opts.seed, key)
    lr = np.log(_medians(dense.Y, dense.counts, opts.n_boot, rng)) - np.log(
        _medians(sub.Y, sub.counts, opts.n_boot, rng)
    )
    value, kind = _crossing(lr, common)
    m_star, lo, hi = _m_star_interval(value, opts.confidence)
    speed = np.exp(lr[:, -1])
    s_lo, s_hi = _interval(speed[1:], opts.confidence)
    return {c: sub.keys[c] for c in ("machine", "backend", "dtype", "label", "options",
                                     "threshold", "data")} | {
        "baseline_label": dense.keys["label"], "baseline_options": dense.keys["options"],
        "min_m": common[0],
        "context": sub.context, "quantity": sub.quantity, "m_star": m_star, "ci_low": lo,
        "ci_high": hi, "kind": _KINDS[kind[0]], "speedup_at_max_m": speed[0],
        "speedup_ci_low": s_lo, "speedup_ci_high": s_hi, "max_m": common[-1],
    }


def crossover(runs: pd.DataFrame | Runs, **options) -> pd.DataFrame:
    """The ``crossover.csv`` table: width m* where subquad overtakes dense-gn, and the speed-up."""
    opts = FitOptions(**options)
    ok = _ok_rows(runs)
    ok = ok[ok["phase"] == "iteration"]
    rows = []
    for quantity in CROSSOVER_QUANTITIES:
        series = list(_iter_series(ok, "m", [quantity], min_points=2))
        subs = [s for s in series if s.keys["method"] == "subquad"]
        dense = [s for s in series if s.keys["method"] == "dense-gn"]
        pairs = [(s, b) for s in subs for b in dense if _compatible(s, b)]
        rows += [r for r in (_crossover_row(s, b, opts) for s, b in pairs) if r is not None]
    return TABLES["crossover"].frame(rows)


# ------------------------------------------------------------------------------ self-check


def selfcheck(runs: pd.DataFrame | Runs, tolerance: float | None = None, **options
              ) -> pd.DataFrame:
    """The ``selfcheck.csv`` table: exponents of the calibration kernels against 1 and 2.

    ``tolerance`` defaults to ``[calibration] tolerance`` of limits.toml.
    """
    if tolerance is None:
        tolerance = load_limits().calibration_tolerance
    opts = FitOptions(**options)
    ok = _ok_rows(runs)
    calib = ok[ok["method"].isin(list(CALIBRATION)) & (ok["phase"] == "kernel")]
    rows = [_selfcheck_row(s, opts, tolerance)
            for s in _iter_series(calib, "m", ["seconds"], min_points=1)]
    for kernel in sorted(set(calib["method"]) - {r["kernel"] for r in rows}):
        rows.append({"kernel": kernel, "expected": CALIBRATION[kernel], "ok": False,
                     "tolerance": tolerance})
    if not rows:
        return TABLES["selfcheck"].frame([{"kernel": "not run"}])
    out = TABLES["selfcheck"].frame(rows)
    out["ok"] = out["ok"].astype(bool)
    out["trustworthy"] = bool(out["ok"].all())
    return out


def _selfcheck_row(s: _Series, opts: FitOptions, tolerance: float) -> dict:
    """One self-check row; a series with fewer than 3 widths cannot be fitted and is not ok."""
    expected = CALIBRATION[s.keys["method"]]
    row = {"kernel": s.keys["method"], "expected": expected, "tolerance": tolerance,
           "machine": s.keys["machine"], "backend": s.keys["backend"],
           "dtype": s.keys["dtype"], "context": s.context, "n_points": len(s.x), "ok": False}
    if len(s.x) < 3:
        return row
    meds = _medians(s.Y, s.counts, opts.n_boot, _rng(opts.seed, _series_key(s, "")))
    fit = _slope_fit(s.x, meds, opts, (opts.min_axis or {}).get("m"))
    if fit is None:
        return row
    ok = abs(fit.exponent - expected) <= tolerance
    return row | {"exponent": fit.exponent, "ci_low": fit.ci_low, "ci_high": fit.ci_high,
                  "n_points": len(fit.x), "ok": ok}


def trustworthy(check: pd.DataFrame | None) -> bool | None:
    """The run's flag from a self-check table: None when no calibration kernel was run."""
    if check is None or check.empty or (check["kernel"] == "not run").all():
        return None
    ran = check[check["kernel"] != "not run"]
    fitted = pd.to_numeric(ran["exponent"], errors="coerce").notna()
    ok = ran["ok"].astype(bool)
    if (fitted & ~ok).any():
        return False
    return True if fitted.all() else None  # a kernel with < 3 widths: could not check


# ------------------------------------------------------------------------------------- run


def last_caches(rd: RunDir) -> dict[str, float]:
    """Bytes of the last cache level per machine id, from the run's environment files."""
    out: dict[str, float] = {}
    for env in rd.machine_environments():
        sizes = [c.get("size") or 0 for c in env.get("caches") or []]
        if env.get("machine") and max(sizes, default=0) > 0:
            out[str(env["machine"])] = float(max(sizes))
    return out


def benchmark_run(path: Path) -> RunDir:
    """The tables of a pytest-benchmark JSON file: ``<stem>-fits.csv`` etc. beside it."""
    return RunDir(path.parent, prefix=f"{path.stem}-", runs=read_benchmark_json(path))


def _check_window(runs: Runs, slopes: list[dict], opts: FitOptions) -> None:
    """An explicit window (``--min-m``) that leaves no series to fit is a user error."""
    if any(r["fit"] == "slope" for r in slopes) or not opts.min_axis or runs.ok.empty:
        return
    axis, value = next(iter(opts.min_axis.items()))
    top = runs.ok[axis].max()
    raise ConfigError(f"min-{axis}", f"no series has 3 or more {axis} values >= "
                      f"{fmt_number(value)} (the run's largest {axis} is {fmt_number(top)}); "
                      f"lower it or drop the option")


def fit_run(rd: RunDir | Path, **options) -> FitPaths:
    """Fit a run (its ``runs.csv``) or a pytest-benchmark JSON file; write the derived tables.

    Writes ``fits.csv``, ``local_slopes.csv``, ``crossover.csv``, ``selfcheck.csv`` and
    ``dropped.csv`` (rows of runs.csv that could not be used, with the reason) as one set (all
    or none) and returns their
    paths by name, with the self-check flag as ``.trustworthy`` and the drop summary as
    ``.dropped``. Prints nothing.
    """
    opts = FitOptions(**options)
    is_json = not isinstance(rd, RunDir) and Path(rd).suffix.lower() == ".json"
    rd = benchmark_run(Path(rd)) if is_json and Path(rd).is_file() else RunDir.of(rd)
    runs = rd.runs()
    if opts.last_cache is None:
        opts = replace(opts, last_cache=last_caches(rd))
    ok = runs.ok
    slopes, locals_ = _slopes_and_locals(ok, opts)
    _check_window(runs, slopes, opts)
    kw = dict(confidence=opts.confidence, n_boot=opts.n_boot, seed=opts.seed,
              window=opts.window, min_axis=opts.min_axis)
    check = selfcheck(runs, **kw)
    result = FitPaths(rd.write_tables({
        "fits": slopes + _joint_rows(ok, opts),
        "local_slopes": locals_,
        "crossover": crossover(runs, **kw),
        "selfcheck": check,
        "dropped": runs.dropped,
    }))
    result.trustworthy = trustworthy(check)
    result.dropped = runs.drop_counts()
    return result
