"""The results schema: every file a run directory holds, declared once.

One ``Table`` per CSV (columns with dtypes, the columns a reader needs, whether ``subquad fit``
derives it, whether it carries the ``schema`` version column) and the keys of the JSON files.
Adding a table is one ``Table(...)`` line in ``TABLES``; ``RunDir`` reads and writes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

SCHEMA_VERSION = 2
VERSION_COLUMN = "schema"


@dataclass(frozen=True)
class Table:
    """One table of a run directory: name (file ``<name>.csv``), typed columns, needs."""

    name: str
    spec: str  #: "col col:float ..." (default dtype str); ``schema`` is appended
    required: tuple[str, ...] = ()
    derived: bool = True  #: written by a command from measured tables: refreshed, not migrated
    versioned: bool = True  #: carries the ``schema`` column (checked on read)
    #: the command that rewrites it ("fit", "report", "model", "sweep")
    writer: str = "fit"
    dtypes: dict[str, str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        pairs = (item.partition(":") for item in self.spec.split())
        object.__setattr__(self, "dtypes", {col: dtype or "str" for col, _, dtype in pairs})

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
        if self.versioned:
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
_CLAIM = "claim predicted measured interval verdict reason"
_MODEL_KEYS = "method options backend dtype n:float d:float L:float c:float"
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
          "ci_high:float ok:bool trustworthy:bool machine backend dtype context n_points:float",
          ("kernel",)),
    Table("claims", _CLAIM, ("claim", "verdict"), writer="report"),
    Table("axis_claims", _CLAIM, ("claim", "verdict"), writer="report"),
    Table("dropped", "table cell method label options m:float phase column value reason "
          "rows:float", ("reason",)),
    Table("model", "machine calibration " + _MODEL_KEYS + " update_resolved m:float phase access "
          "working_set:float level work:float bytes:float line_bytes:float measured:float "
          "predicted:float ratio:float factor:float fitted:float fit_ratio:float",
          ("method", "phase"), versioned=False, writer="model"),
    Table("model_factors", _MODEL_KEYS + " update_resolved phase factor:float ci_low:float "
          "ci_high:float n_cells:float min_m:float", ("phase",), versioned=False, writer="model"),
    Table("model_summary", _MODEL_KEYS + " fit_range n_widths:float measured_exponent:float "
          "measured_ci_low:float measured_ci_high:float model_exponent:float "
          "fitted_exponent:float work_exponent:float asymptotic_exponent:float "
          "asymptotic_range", ("method",), versioned=False, writer="model"),
    Table("model_speedup", "backend dtype n:float d:float L:float c:float sub_options m:float "
          "dense_seconds:float subquad_seconds:float speedup:float kind", ("speedup",),
          versioned=False, writer="model"),
)}

#: the keys of ``environment.json`` in the order the report shows them, each with its label
#: (harness/environment.py writes them; dotted keys reach into a record)
ENVIRONMENT = {
    "machine": "machine id", "cpu_model": "CPU", "cores": "cores",
    "usable_cores": "usable cores", "memory_bytes": "memory", "caches": "caches",
    "blas": "BLAS (threads)", "numba.num_threads": "numba threads", "gpu": "GPU",
    "python": "Python", "versions": "versions",
    "git": "git commit", "date_utc": "date", "hostname": "hostname",
    "platform": "platform", "cpu_governor": "CPU governor", "load_average": "load average",
    "load_average_end": "load average at the end", "omp_wait_policy": "OMP_WAIT_POLICY",
    "thread_env": "thread variables",
}
#: the keys of ``run.json``: the experiment a run directory holds (``RunDir.bind``)
RUN = {"experiment": "experiment name", "identity": "sha256 of its cells, timing and name"}
#: the advisory lock a writer of cells/runs.csv holds (its pid and command line inside)
LOCK_FILE = ".subquad.lock"


def table_frame(name: str, rows: Iterable[Mapping] | pd.DataFrame) -> pd.DataFrame:
    """One declared table as written: exact columns, the schema version, and float columns
    whose values are all whole numbers without '.0'."""
    df = TABLES[name].frame(rows)
    for col, dtype in TABLES[name].dtypes.items():
        num = pd.to_numeric(df[col], errors="coerce") if dtype == "float" else None
        if num is not None and num.notna().any() and np.all(num.dropna() % 1 == 0) \
                and num.abs().max() < 2**53:
            df[col] = num.astype("Int64")
    return df


def refresh_hint(name: str, run_dir: Path) -> str:
    """The command that rewrites a table in the current schema."""
    if name in ("runs", "training"):
        return f"re-measure it with `subquad sweep <experiment.toml> --out {run_dir}`"
    return f"run `subquad {TABLES[name].writer} {run_dir}`"


def version_of(df: pd.DataFrame) -> int:
    if VERSION_COLUMN not in df:
        return 1
    v = pd.to_numeric(df[VERSION_COLUMN], errors="coerce").fillna(1)  # empty: schema 1
    return int(v.min()) if len(v) else SCHEMA_VERSION


