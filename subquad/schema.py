"""The results schema: every table of a run directory, its vocabulary, strings and loader.

One declaration per table (``TABLES``): its columns with dtypes, the columns a reader needs,
and whether ``subquad fit`` derives it (then an old copy is refreshed by re-fitting, never
migrated). Every table is written with a ``schema`` column holding ``SCHEMA_VERSION`` and checked
on load: a measured table (runs.csv, training.csv) of version 1 is migrated from the run's
copied ``experiment.toml``; a derived table of an older version is refused with the command
that refreshes it. Adding a table is one ``Table(...)`` line in ``TABLES``.

The loader never hides data: ``load_runs`` returns the rows it could not use (a measured row
whose ``seconds`` is missing, text, negative, or zero while work was done) as ``dropped``, one
row per (cell, phase, reason) with the count, and every consumer prints or renders them.

Also here, so they exist once: the vocabulary (methods, phases, axes, quantities, statuses,
calibration kernels), the ``options`` and ``context`` strings (built and parsed), and the one
number formatter.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from subquad.errors import ConfigError
from subquad.files import atomic_write_frame, read_table

SCHEMA_VERSION = 2
VERSION_COLUMN = "schema"

# ------------------------------------------------------------------------------ vocabulary

TRAINED_METHODS = ("dense-gd", "dense-gn", "subquad")
#: calibration kernels and the exponent in m their time must show (the self-check)
CALIBRATION = {"calib-axpy": 1.0, "calib-gemv": 2.0}
METHODS = (*TRAINED_METHODS, *CALIBRATION)
ITERATION_PHASES = ("forward", "backward", "gram", "solve", "update", "fold")
PHASES = ("init", *ITERATION_PHASES, "iteration", "kernel")
#: the axes an exponent is fitted in; SIZES are every size parameter of a cell
FIT_AXES = ("m", "n", "d")
SIZES = ("m", "n", "d", "L", "c")
QUANTITIES = ("seconds", "work", "bytes")
STATUSES = ("ok", "censored", "nan", "cg-not-converged", "singular", "oom", "error")
#: the options that change what a trainer computes, in the order of the ``options`` string
#: (requested values; ``update_resolved`` and ``forward_kernel_resolved`` say what ran)
OPTION_KEYS = ("solver", "update", "rank_max", "forward_kernel", "lr", "damping",
               "sketch_size", "cg_tol")
#: columns that identify a variant besides ``options``: never pooled
VARIANT_COLUMNS = ("label", *OPTION_KEYS, "update_resolved", "forward_kernel_resolved",
                   "threshold")

# ---------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Table:
    """One table of a run directory: name (file ``<name>.csv``), typed columns, needs."""

    name: str
    spec: str  #: "col col:float ..." (default dtype str); ``schema`` is appended
    required: tuple[str, ...] = ()
    derived: bool = True  #: written by ``subquad fit``: refreshed, not migrated
    dtypes: dict[str, str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        types = {}
        for item in self.spec.split():
            col, _, dtype = item.partition(":")
            types[col] = dtype or "str"
        object.__setattr__(self, "dtypes", types)

    @property
    def columns(self) -> list[str]:
        return list(self.dtypes)

    @property
    def file(self) -> str:
        return f"{self.name}.csv"

    def frame(self, rows: Iterable[Mapping[str, Any]] | pd.DataFrame = ()) -> pd.DataFrame:
        """Rows (dicts or a frame) with exactly this table's columns and the schema version."""
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        df = df.reindex(columns=self.columns)
        df[VERSION_COLUMN] = SCHEMA_VERSION
        return df

    def typed(self, df: pd.DataFrame) -> pd.DataFrame:
        """Columns converted to their dtypes (text of numbers that fail to parse becomes NaN:
        only ``load_runs`` reads measured numbers, and it reports those rows first)."""
        df = df.copy()
        for col, dtype in self.dtypes.items():
            if col not in df:
                df[col] = "" if dtype == "str" else np.nan
            if dtype == "str":
                text = df[col].astype(object)
                df[col] = text.where(text.notna(), "").astype(str)
            elif dtype == "bool":
                df[col] = df[col].astype(str).str.strip().str.lower().isin(["true", "1"])
            else:
                df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        return df


_CELL = ("experiment cell machine method label backend dtype m:float n:float d:float L:float "
         "c:float threshold data solver update update_resolved rank_max:float forward_kernel "
         "forward_kernel_resolved lr:float damping:float sketch_size:float cg_tol:float options "
         "seed:float")
_SERIES = ("machine method label options backend dtype threshold data phase quantity axis "
           "context update_resolved")
TABLES: dict[str, Table] = {t.name: t for t in (
    Table("runs", _CELL + " sample:float iters:float phase seconds:float work:float "
          "bytes:float line_bytes:float working_set:float access shape calls:float "
          "active_fraction:float loss:float cg_iters:float status message started ended",
          ("method", "phase", "m", "seconds"), derived=False),
    Table("training", "experiment cell machine method label options data m:float n:float "
          "d:float L:float c:float threshold seed:float iteration:float loss:float layer:float "
          "active_fraction:float expected_active_fraction:float flips:float cg_iters:float "
          "cond_K:float cond_preconditioned:float",
          ("cell", "iteration", "loss"), derived=False),
    Table("fits", _SERIES + " fit exponent:float ci_low:float ci_high:float n_points:float "
          "fit_range intercept:float window breakpoint:float breakpoint_ci_low:float "
          "breakpoint_ci_high:float", ("method", "phase", "exponent")),
    Table("local_slopes", _SERIES + " x_lo:float x_hi:float slope:float ci_low:float "
          "ci_high:float", ("method", "slope")),
    Table("crossover", "machine backend dtype label options baseline_label baseline_options "
          "context quantity m_star:float ci_low:float ci_high:float kind "
          "speedup_at_max_m:float speedup_ci_low:float speedup_ci_high:float min_m:float "
          "max_m:float threshold data", ("kind",)),
    Table("selfcheck", "kernel expected:float tolerance:float exponent:float ci_low:float "
          "ci_high:float ok:bool trustworthy machine backend dtype context n_points:float",
          ("kernel",)),
    Table("claims", "claim predicted measured interval verdict reason", ("claim", "verdict")),
    Table("dropped", "table cell method label options m:float phase column value reason "
          "rows:float", ("reason",)),
)}

#: kinds of ``crossover.csv``; the figure and the report label each one differently
CROSSOVER_KINDS = {
    "interpolated": "interpolated between measured widths",
    "below range": "below the measured range: subquad is already cheaper at the smallest "
                   "measured width",
    "extrapolated": "extrapolated from the fitted power laws, outside the measured range",
    "none in range": "no crossing in the measured range",
}


def write_table(path: Path, name: str, rows: Iterable[Mapping] | pd.DataFrame) -> Path:
    """Write one declared table (exact columns plus the schema version), atomically.

    Float columns whose values are all whole numbers are written without '.0'.
    """
    df = TABLES[name].frame(rows)
    for col, dtype in TABLES[name].dtypes.items():
        num = pd.to_numeric(df[col], errors="coerce") if dtype == "float" else None
        if num is not None and num.notna().any() and np.all(num.dropna() % 1 == 0) \
                and num.abs().max() < 2**53:
            df[col] = num.astype("Int64")
    return atomic_write_frame(Path(path), df)


def refresh_hint(name: str, run_dir: Path) -> str:
    """The command that rewrites a table in the current schema."""
    if name in ("runs", "training"):
        return f"re-measure it with `subquad sweep <experiment.toml> --out {run_dir}`"
    if name == "claims":
        return f"run `subquad report {run_dir}`"
    return f"run `subquad fit {run_dir}`"


def _version(df: pd.DataFrame) -> int:
    if VERSION_COLUMN not in df:
        return 1
    v = pd.to_numeric(df[VERSION_COLUMN], errors="coerce").fillna(1)  # empty: schema 1
    return int(v.min()) if len(v) else SCHEMA_VERSION


def load_table(path: Path, name: str) -> pd.DataFrame | None:
    """A derived table, typed, or None when the file is absent.

    An unreadable file is a ConfigError naming it (``subquad.files.read_table``); a table of
    another schema version is refused with the command that refreshes it.
    """
    table, path = TABLES[name], Path(path)
    if not path.is_file():
        return None
    df = read_table(path, table.file, table.required, dtype=str, keep_default_na=False)
    version = _version(df)
    if version != SCHEMA_VERSION:
        raise ConfigError(table.file, f"{path} is in results schema {version}, this subquad "
                          f"reads {SCHEMA_VERSION}; {refresh_hint(name, path.parent)}")
    return table.typed(df)


# ------------------------------------------------------------------------------ runs.csv


@dataclass
class Runs:
    """runs.csv, typed and validated: usable rows, and what was dropped with the reason."""

    frame: pd.DataFrame
    dropped: pd.DataFrame
    #: every row as read (text), after a migration: what ``write_runs`` writes back
    raw: pd.DataFrame | None = None
    migrated: bool = False

    @property
    def ok(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "ok"]

    def drop_summary(self) -> list[str]:
        """'3 rows: seconds is text ('abc')' lines, one per reason."""
        if self.dropped.empty:
            return []
        by = self.dropped.groupby("reason", sort=True)["rows"].sum()
        return [f"{int(n)} row{'s' if n != 1 else ''}: {reason}" for reason, n in by.items()]


def _drop_reasons(raw: pd.DataFrame, typed: pd.DataFrame) -> pd.Series:
    """Why each measured (status ok) row cannot be used; '' when it can."""
    text = raw["seconds"].astype(str).str.strip()
    sec, work = typed["seconds"], typed["work"]
    ok = typed["status"] == "ok"
    reason = pd.Series("", index=raw.index, dtype=object)
    reason[ok & (text == "")] = "seconds missing"
    reason[ok & (text != "") & sec.isna()] = "seconds is not a number"
    reason[ok & sec.notna() & ~np.isfinite(sec.fillna(0))] = "seconds is not finite"
    reason[ok & text.str.lower().isin(["nan", "-nan"])] = "seconds is NaN"
    reason[ok & (sec < 0)] = "seconds is negative"
    reason[ok & (sec == 0) & ~(work == 0)] = "seconds is zero although work was done"
    m = typed["m"]
    reason[ok & (reason == "") & ~(np.isfinite(m.fillna(np.nan)) & (m > 0))] = "m is not > 0"
    return reason


def _dropped_rows(raw: pd.DataFrame, typed: pd.DataFrame, reason: pd.Series) -> pd.DataFrame:
    """One row per (cell, phase, reason): what was dropped, with an example value and count."""
    bad = reason != ""
    if not bad.any():
        return TABLES["dropped"].typed(pd.DataFrame(columns=TABLES["dropped"].columns))
    d = typed.loc[bad, ["cell", "method", "label", "options", "m", "phase"]].copy()
    d["column"] = np.where(reason[bad].str.startswith("m "), "m", "seconds")
    d["value"] = raw.loc[bad, "seconds"].astype(str)
    d["reason"] = reason[bad]
    keys = ["cell", "method", "label", "options", "m", "phase", "column", "reason"]
    out = d.groupby(keys, dropna=False, sort=True).agg(value=("value", "first"),
                                                        rows=("value", "size")).reset_index()
    out.insert(0, "table", "runs.csv")
    return TABLES["dropped"].typed(out)


def validate_runs(raw: pd.DataFrame) -> Runs:
    """Type a runs table (strings kept as read) and split off the rows it cannot use."""
    table = TABLES["runs"]
    raw = raw.copy()
    for col in table.columns:
        if col not in raw:
            raw[col] = ""
    raw = raw.astype(object).where(raw.notna(), "")
    typed = table.typed(raw)
    typed.loc[typed["status"] == "", "status"] = "ok"
    if (typed["options"] == "").all():
        typed["options"] = [options_string(r) for r in typed.to_dict("records")]
    typed.loc[typed["label"] == "", "label"] = typed["method"]
    reason = _drop_reasons(raw, typed)
    return Runs(typed[reason == ""].reset_index(drop=True), _dropped_rows(raw, typed, reason),
                raw)


def load_runs(path: Path, migrate: bool = True) -> Runs:
    """``runs.csv`` of a run directory (or the file itself), validated; version 1 migrated.

    Reads every column as text (``keep_default_na=False``: the status ``nan`` stays a string).
    """
    path = Path(path)
    if path.is_dir():
        path = path / "runs.csv"
    if not path.is_file():
        raise ConfigError("run_dir", f"no runs table at {path}; run `subquad sweep` first")
    table = TABLES["runs"]
    raw = read_table(path, table.file, table.required, dtype=str, keep_default_na=False)
    version = _version(raw)
    migrated = False
    if version == 1:
        if not migrate:
            raise ConfigError(table.file, f"{path} is in results schema 1; "
                              f"{refresh_hint('runs', path.parent)}")
        raw = migrate_measured(raw, path.parent, "runs")
        migrated = True
    elif version != SCHEMA_VERSION:
        raise ConfigError(table.file, f"{path} is in results schema {version}, this subquad "
                          f"reads {SCHEMA_VERSION}; {refresh_hint('runs', path.parent)}")
    runs = validate_runs(raw)
    runs.migrated = migrated
    return runs


def load_training(run_dir: Path) -> pd.DataFrame | None:
    """``training.csv`` typed (version 1 migrated), None when the run trained nothing."""
    path = Path(run_dir) / "training.csv"
    if not path.is_file():
        return None
    table = TABLES["training"]
    raw = read_table(path, table.file, table.required, dtype=str, keep_default_na=False)
    if _version(raw) == 1:
        raw = migrate_measured(raw, path.parent, "training")
    df = table.typed(raw)
    df.loc[df["label"] == "", "label"] = df["method"]
    return df


def migrate_measured(raw: pd.DataFrame, run_dir: Path, name: str) -> pd.DataFrame:
    """Schema 1 -> 2 of runs.csv / training.csv: add the variant columns.

    Schema 1 recorded only solver, update and rank_max. The other variant columns (label, lr,
    damping, forward_kernel, sketch_size, cg_tol, the resolved update) are derived from the
    run's copied ``experiment.toml``: each row's ``cell`` id is the id of one cell it expands
    to, whose options are exact; ``update=auto`` resolves by the rule of that time (rowdense or
    scatter by Q(beta); the fused update came later). ``forward_kernel_resolved`` was never
    recorded and stays empty.
    A run without its experiment file, or with cells the file does not expand to, is refused.
    """
    from subquad.harness.config import expand_cells, load_experiment  # noqa: PLC0415
    from subquad.harness.measure import variant_columns  # noqa: PLC0415

    toml = Path(run_dir) / "experiment.toml"
    hint = refresh_hint(name, Path(run_dir))
    if not toml.is_file():
        raise ConfigError(f"{name}.csv", f"{run_dir}/{name}.csv is in results schema 1 and "
                          f"there is no experiment.toml to migrate it from; {hint}")
    cells = {c.base_id: c for c in expand_cells(load_experiment(toml))}
    unknown = sorted(set(raw["cell"]) - set(cells))
    if unknown:
        raise ConfigError(f"{name}.csv", f"{len(unknown)} cell(s) of {run_dir}/{name}.csv "
                          f"(e.g. {unknown[0]}) are not cells of its experiment.toml; {hint}")
    cols = {cid: variant_columns(cells[cid], legacy=True) for cid in set(raw["cell"])}
    out = raw.copy()
    names = {k for c in cols.values() for k in c} & set(TABLES[name].columns)
    for col in sorted(names):
        out[col] = [fmt_number(cols[cid].get(col, "")) for cid in raw["cell"]]
    out[VERSION_COLUMN] = SCHEMA_VERSION
    return out


def write_runs(run_dir: Path, runs: Runs) -> Path:
    """Rewrite ``runs.csv`` in the current schema (after a migration): every row, as read."""
    return write_table(Path(run_dir) / "runs.csv", "runs",
                       runs.raw if runs.raw is not None else runs.frame)


# ------------------------------------------------------------------------- strings and numbers


def fmt_number(v: object, spec: str = "", missing: str = "") -> str:
    """The one number formatter: integers without '.0', others ``spec`` (default 6
    significant digits); None and NaN give ``missing``; text is returned as it is."""
    if v is None or isinstance(v, bool):
        return missing if v is None else str(v)
    if isinstance(v, str):  # text is never parsed: the status "nan" stays "nan"
        return v or missing
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v) if str(v) else missing
    if math.isnan(f):
        return missing
    if spec:
        return format(f, spec)
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return str(int(f)) if f.is_integer() and abs(f) < 1e15 else f"{f:.6g}"


def fmt_seconds(seconds: float) -> str:
    """'1.23 s', '45.6 ms' or '789 us' ('-' when not finite)."""
    if seconds is None or not np.isfinite(seconds):
        return "-"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} us"


def context_string(values: Mapping[str, object]) -> str:
    """``k=v;...`` of the given values in order, leaving out missing ones."""
    return ";".join(f"{k}={fmt_number(v)}" for k, v in values.items() if fmt_number(v) != "")


def parse_context(text: object) -> dict[str, str]:
    """The inverse of ``context_string`` (also parses ``options`` strings); values as text."""
    return dict(item.split("=", 1) for item in str(text or "").split(";") if "=" in item)


def same_value(a: object, b: object) -> bool:
    """Equality that treats 16, 16.0 and '16' alike."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)  # type: ignore
    except (TypeError, ValueError):
        return str(a) == str(b)


def context_matches(context: str, fixed: Mapping[str, object]) -> bool:
    """True when every key the context string and ``fixed`` share has the same value."""
    return all(same_value(v, fixed[k]) for k, v in parse_context(context).items() if k in fixed)


def options_string(values: Mapping[str, object]) -> str:
    """The canonical ``options`` string of a variant: ``key=value`` of OPTION_KEYS that apply.

    Calibration kernels have none. Dense methods have solver, lr, damping; subquad adds update,
    rank_max and forward_kernel; sketch_size and cg_tol appear only for CG solvers.
    """
    method = str(values.get("method", ""))
    if method in CALIBRATION:
        return ""
    keys = ["solver", "lr", "damping"]
    if method == "subquad" or (not method and values.get("update")):
        keys = ["solver", "update", "rank_max", "forward_kernel", "lr", "damping"]
    if str(values.get("solver", "")).startswith("pcg"):
        keys += ["sketch_size", "cg_tol"]
    return context_string({k: values.get(k) for k in OPTION_KEYS if k in keys})


def options_label(options: str, method: str = "") -> str:
    """Short human label of an options string: solver, update, and what is not a default."""
    from subquad.model.train import DEFAULT_LR  # noqa: PLC0415

    o = parse_context(options)
    if method in DEFAULT_LR and o.get("lr") and same_value(o["lr"], DEFAULT_LR[method]):
        o.pop("lr")
    if o.get("damping") and same_value(o["damping"], 0):
        o.pop("damping")
    parts = [o[k] for k in ("solver", "update") if o.get(k)]
    if o.get("update") == "lazy" and o.get("rank_max") not in (None, "", "0"):
        parts[-1] = f"lazy r={o['rank_max']}"
    for k in ("forward_kernel",):
        if o.get(k) not in (None, "", "auto"):
            parts.append(o[k])
    for k in ("lr", "damping", "sketch_size", "cg_tol"):
        if o.get(k) not in (None, ""):
            parts.append(f"{k}={o[k]}")
    return ", ".join(parts)


def series_label(method: str, options: str, label: str = "") -> str:
    """'fast (cholesky, scatter, lr=1)', or 'dense-gn (lr=1)' when the label is the method."""
    short = options_label(options, method)
    name = label if label and label != method else method
    return f"{name} ({short})" if short else name
