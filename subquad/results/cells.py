"""The cell files of a run directory: per-cell CSVs written atomically, merged into runs.csv.

A cell's rows go to ``DIR/cells/<cell_id>.csv`` (and its training rows to
``<cell_id>.training.csv``, written first) through a temporary file in the same directory,
fsync and ``os.replace``; so a SIGKILL at any moment leaves either the complete file or none.
Each cell file starts with a checksum line (``# subquad-sha256 <hex of the rest>``), so a file
truncated or modified afterwards (a copy cut short, a bad disk), or without that line, is
damaged: ``read_cell`` says so, ``--merge`` reports it and ``--resume`` reruns it.
A cell id begins with the experiment's identity (``IDENTITY_DIGITS``): files of another
experiment (copied in) are foreign, reported and left out. ``merge_run`` rebuilds
``runs.csv`` and ``training.csv`` from the sound cell files of the directory's experiment,
deduplicated by (cell, sample, phase) resp. (cell, iteration, layer).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from subquad.errors import CorruptFileError
from subquad.files import atomic_write_frame, atomic_write_text
from subquad.results.schema import SCHEMA_VERSION, TABLES, VERSION_COLUMN
from subquad.vocabulary import PHASES as PHASE_ORDER
from subquad.vocabulary import RETRY_OUTCOMES

#: docs/DESIGN.md, "runs.csv" and "training.csv": declared once, in the results schema
RUNS_COLUMNS = [*TABLES["runs"].columns, VERSION_COLUMN]
TRAINING_COLUMNS = [*TABLES["training"].columns, VERSION_COLUMN]
#: training.csv columns taken from the solver's info of that iteration (empty if it has none)
SOLVER_INFO_COLUMNS = ("cg_iters", "cond_K", "cond_preconditioned")
CELL_FILE = re.compile(r"^[0-9a-f]{16}\.csv$")
#: every file the sweep writes in cells/: a cell, its training rows, their temporaries
OWN_FILE = re.compile(r"^(\.)?[0-9a-f]{16}(\.training)?\.csv(?(1)\.[^/]+\.tmp)$")
#: the leading hex digits of a cell id that are its experiment's identity
IDENTITY_DIGITS = 6
#: first line of every cell file: this prefix, then the sha256 of the rest of the file
CHECKSUM_PREFIX = "# subquad-sha256 "
#: runs.csv and training.csv are sorted by these columns, then by their rows' key
SERIES_ORDER = ["experiment", "method", "options", "m", "n", "d", "L", "c", "seed"]


def cells_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "cells"


def cell_path(run_dir: Path, cell_id: str) -> Path:
    return cells_dir(run_dir) / f"{cell_id}.csv"


def training_path(run_dir: Path, cell_id: str) -> Path:
    return cells_dir(run_dir) / f"{cell_id}.training.csv"


def training_of(cell_file: Path) -> Path:
    """The training rows' file beside a cell file."""
    return Path(cell_file).with_name(f"{Path(cell_file).stem}.training.csv")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def atomic_write_csv(path: Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    """Rows as CSV with exactly ``columns`` (missing values empty) and the schema version,
    behind a checksum line."""
    frame = pd.DataFrame(list(rows), columns=columns)
    if VERSION_COLUMN in columns:
        frame[VERSION_COLUMN] = SCHEMA_VERSION
    body = frame.to_csv(index=False)
    atomic_write_text(path, f"{CHECKSUM_PREFIX}{_sha256(body)}\n{body}")


def read_cell(path: Path) -> pd.DataFrame:
    """The rows of a cell (or cell training) file as strings; CorruptFileError if it is damaged:
    unreadable, not UTF-8, without its checksum line, or not matching it."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise CorruptFileError(f"{path}: unreadable ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise CorruptFileError(f"{path}: not text (overwritten?)") from None
    first, _, body = text.partition("\n")
    if not first.startswith(CHECKSUM_PREFIX):
        raise CorruptFileError(f"{path}: no checksum line (damaged or not written by subquad)")
    if first[len(CHECKSUM_PREFIX):].strip() != _sha256(body):
        raise CorruptFileError(f"{path}: checksum mismatch (truncated or modified)")
    try:
        return pd.read_csv(io.StringIO(body), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise CorruptFileError(f"{path}: not a readable CSV ({type(exc).__name__})") from None


def bad_cells(run_dir: Path) -> list[str]:
    """One message per damaged cell or cell-training file of a run directory."""
    bad = []
    for p in cell_files(run_dir):
        for f in (p, training_of(p)):
            if f.exists():
                try:
                    read_cell(f)
                except CorruptFileError as exc:
                    bad.append(str(exc))
    return bad


def cell_files(run_dir: Path) -> list[Path]:
    """The finished cell files of a run directory (temporary files excluded), sorted."""
    d = cells_dir(run_dir)
    return sorted(p for p in d.iterdir() if CELL_FILE.match(p.name)) if d.is_dir() else []


def read_cell_status(path: Path) -> tuple[str, str]:
    """(status, message) of a finished cell file (its first row; a cell has one status).

    A damaged file reads as ("error", "corrupt cell file: ..."), an outcome ``--resume`` reruns.
    """
    try:
        row = read_cell(path)
        if training_of(path).exists():
            read_cell(training_of(path))
    except CorruptFileError as exc:
        return "error", f"corrupt cell file: {exc}"
    if row.empty:
        return "error", "corrupt cell file: no rows"
    return str(row["status"].iloc[0]), str(row["message"].iloc[0])


def is_final(status: str, message: str) -> bool:
    """False for outcomes that ``--resume`` retries (sweep budget, lost worker)."""
    return not (status in ("censored", "error") and message.startswith(RETRY_OUTCOMES))


def clear_cells(run_dir: Path, temporaries: bool = False) -> list[Path]:
    """Remove the cell files and temporaries of a previous run (only the temporaries, left by a
    killed writer, if ``temporaries``), never another file; returns what it removed."""
    d = cells_dir(run_dir)
    gone = sorted(p for p in d.iterdir() if p.is_file() and OWN_FILE.match(p.name)
                  and (p.name.endswith(".tmp") or not temporaries)) if d.is_dir() else []
    for p in gone:
        p.unlink(missing_ok=True)
    return gone


def foreign_cells(run_dir: Path, identity: str | None) -> list[Path]:
    """The cell files whose id is not of the experiment ``identity`` (none if it is unknown)."""
    prefix = (identity or "")[:IDENTITY_DIGITS]
    return [p for p in cell_files(run_dir) if not p.name.startswith(prefix)]


def experiment_of(path: Path) -> str:
    """The experiment named in a cell file's rows ('?' when it cannot be read)."""
    try:
        return str(read_cell(path)["experiment"].iloc[0])
    except (CorruptFileError, KeyError, IndexError):
        return "?"


def _read_all(files: list[Path]) -> pd.DataFrame | None:
    """The rows of the sound files among ``files``; damaged ones are left out (``bad_cells``
    names them, and the sweep reports them)."""
    frames = []
    for p in files:
        with contextlib.suppress(CorruptFileError):
            frames.append(read_cell(p))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else None


def _merge(files: list[Path], columns: list[str], key: list[str]) -> pd.DataFrame:
    """The rows of ``files``, one per ``key`` (the last), sorted by series, then ``key``."""
    order = [*SERIES_ORDER, *key]
    df = _read_all(files)
    if df is None:
        return pd.DataFrame(columns=columns)
    df = df.reindex(columns=columns, fill_value="").drop_duplicates(subset=key, keep="last")
    sort = df[order].copy()
    for col in order:
        num = (sort[col].map({p: i for i, p in enumerate(PHASE_ORDER)}) if col == "phase"
               else pd.to_numeric(sort[col], errors="coerce"))
        if num.notna().all():
            sort[col] = num
    return df.loc[sort.sort_values(order, kind="stable").index]


def merge_run(run_dir: Path, identity: str | None = None) -> tuple[Path, int]:
    """Rebuild ``runs.csv`` (and ``training.csv`` if any cell trained) from the sound cell files
    of the experiment ``identity`` (every sound one if None).

    Returns the runs.csv path and how many cells it holds.
    """
    run_dir = Path(run_dir)
    foreign = set(foreign_cells(run_dir, identity))
    files = [p for p in cell_files(run_dir) if p not in foreign
             and not read_cell_status(p)[1].startswith("corrupt cell file")]
    runs = _merge(files, RUNS_COLUMNS, ["cell", "sample", "phase"])
    out = atomic_write_frame(run_dir / "runs.csv", runs)
    tfiles = [t for t in map(training_of, files) if t.is_file()]
    if tfiles:
        atomic_write_frame(run_dir / "training.csv",
                           _merge(tfiles, TRAINING_COLUMNS, ["cell", "iteration", "layer"]))
    return out, int(runs["cell"].nunique())
