"""``RunDir``: the only reader and writer of a run directory's files, and its invariants.

Every table is parsed at most once per ``RunDir`` (commands make one per directory) and checked
against its declaration in ``schema``; writes are atomic (``subquad.files``), several derived
tables as one set, and refresh the cache (``files.PARSES`` counts the parses, so a test can
hold a command to one per file). A writer of cells/runs.csv holds the directory's advisory
lock; ``run.json`` names the one experiment the directory holds.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

from subquad.errors import ConfigError, WriteError
from subquad.files import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_set,
    atomic_write_text,
    read_table,
    try_lock,
)
from subquad.results.cells import IDENTITY_DIGITS, merge_run
from subquad.results.runs import Runs, validate_runs
from subquad.results.schema import (
    LOCK_FILE,
    RUN,
    SCHEMA_VERSION,
    TABLES,
    refresh_hint,
    table_frame,
    version_of,
)
from subquad.vocabulary import STATUSES

#: what commands derive from runs.csv besides the derived tables (removed with them)
DOCUMENTS = ("report.md", "axis_claims.md", "figures")
#: an OSError of these is a failed write (``RunDir.writing``), not a bug
WRITE_ERRNOS = (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT,
                errno.EFBIG, errno.EIO)


class OldSchema(ConfigError):
    """A measured table of results schema 1: ``subquad upgrade DIR`` (or ``fit``) rewrites it."""


class RunDir:
    """One run directory (or the tables beside a benchmark JSON file, ``prefix`` = its stem)."""

    def __init__(self, path: Path | str, prefix: str = "", runs: Runs | None = None):
        self.path = Path(path)
        self.prefix = prefix
        self._cache: dict[str, Any] = {}
        if runs is not None:
            self._cache["runs"] = runs

    @classmethod
    def of(cls, where: RunDir | Path | str) -> RunDir:
        """``where`` itself when it is a RunDir (its parsed tables are reused), else a new one."""
        return where if isinstance(where, RunDir) else cls(where)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ---------------------------------------------------------------------------- soundness

    @classmethod
    def load(cls, path: Path | str, param: str = "DIR", fitted: bool | None = False
             ) -> RunDir:
        """A run directory whose runs.csv (and fits.csv: if ``fitted``, or if present when
        ``fitted`` is None) is a sound subquad table; one clear ConfigError otherwise."""
        p = Path(path)
        if not p.exists():
            raise ConfigError(param, f"{p} does not exist; run `subquad sweep` first")
        if not p.is_dir():
            raise ConfigError(param, f"{p} is not a directory; give the run directory holding "
                              "runs.csv")
        rd = cls.of(path)
        if not rd.has("runs"):
            raise ConfigError(param, f"{p} has no runs.csv; run `subquad sweep ... --out {p}` "
                              "(or `subquad sweep --merge` on it) first")
        runs = rd.raw("runs")
        if runs.empty:
            raise ConfigError(str(rd.file("runs")), "has no rows; the sweep recorded no cell")
        status = runs["status"] if "status" in runs else None
        # a table may carry no statuses at all (all ok); one that has them needs one on every row
        bad = None if status is None or (status == "").all() else ~status.isin(STATUSES)
        if bad is not None and bad.any():
            raise ConfigError(str(rd.file("runs")), f"row {int(bad.idxmax()) + 2} has status "
                              f"{runs['status'][bad].iloc[0]!r} (accepted: "
                              f"{', '.join(STATUSES)}); the file is truncated or damaged: "
                              f"rebuild it with `subquad sweep --merge {p}`")
        if fitted or (fitted is None and rd.has("fits")):
            if not rd.has("fits"):
                raise ConfigError(param, f"{p} has no fits.csv; run `subquad fit {p}` first")
            rd.raw("fits")
        return rd

    # ------------------------------------------------------------------------------ reading

    def file(self, name: str) -> Path:
        """The path of a declared table, or of any other file of the directory."""
        return self.path / (f"{self.prefix}{name}.csv" if name in TABLES else name)

    def has(self, name: str) -> bool:
        return self.file(name).is_file()

    def raw(self, name: str) -> pd.DataFrame:
        """A declared table as text, parsed once (every column a string; the status ``nan``
        stays text); a truncated or unreadable file is a ConfigError naming it."""
        key = f"raw:{name}"
        if key not in self._cache:
            path, table = self.file(name), TABLES[name]
            _complete_lines(path)
            self._cache[key] = read_table(path, str(path), table.required, dtype=str,
                                          keep_default_na=False)
        return self._cache[key]

    def version(self, name: str) -> int:
        return version_of(self.raw(name)) if TABLES[name].versioned else SCHEMA_VERSION

    def runs(self) -> Runs:
        """runs.csv, typed and validated (rows it cannot use are in ``.dropped``)."""
        if "runs" not in self._cache:
            if not self.has("runs"):
                raise ConfigError("run_dir", f"no runs table at {self.file('runs')}; run "
                                  "`subquad sweep` first")
            self._check_version("runs")
            self._cache["runs"] = validate_runs(self.raw("runs"))
        return self._cache["runs"]

    def table(self, name: str) -> pd.DataFrame | None:
        """A declared table, typed, or None when the file is absent; a table of another
        schema version is refused with the command that refreshes it."""
        if name not in self._cache:
            if not self.has(name):
                self._cache[name] = None
            else:
                self._check_version(name)
                df = TABLES[name].typed(self.raw(name))
                if name == "training":
                    df.loc[df["label"] == "", "label"] = df["method"]
                self._cache[name] = df
        return self._cache[name]

    def _check_version(self, name: str) -> None:
        version = self.version(name)
        if version == SCHEMA_VERSION:
            return
        hint = refresh_hint(name, self.path)
        if version == 1 and not TABLES[name].derived:
            raise OldSchema(TABLES[name].file, f"{self.file(name)} is in results schema 1; "
                            f"`subquad upgrade {self.path}` rewrites it in schema "
                            f"{SCHEMA_VERSION} (or {hint})")
        raise ConfigError(TABLES[name].file, f"{self.file(name)} is in results schema "
                          f"{version}, this subquad reads {SCHEMA_VERSION}; {hint}")

    def json(self, name: str) -> dict:
        """A JSON file of the directory (environment.json, calibration.json); {} if absent or
        unreadable."""
        if name not in self._cache:
            try:
                self._cache[name] = json.loads(self.file(name).read_text())
            except (OSError, ValueError):
                self._cache[name] = {}
        return self._cache[name]

    def environment(self) -> dict:
        return self.json("environment.json")

    def machine_environments(self) -> list[dict]:
        """environment.json and every ``machines/<id>.json`` (cells run on other nodes)."""
        machines = sorted((self.path / "machines").glob("*.json"))
        envs = [self.environment(), *(self.json(str(f.relative_to(self.path))) for f in machines)]
        return [e for e in envs if e]

    # ------------------------------------------------------------------------------ writing

    def write_table(self, name: str, rows: Iterable[Mapping] | pd.DataFrame) -> Path:
        """One declared table, atomically; the cache is refreshed."""
        return self.write_tables({name: rows})[name]

    def write_tables(self, tables: Mapping[str, Iterable[Mapping] | pd.DataFrame]
                     ) -> dict[str, Path]:
        """Declared tables as one set: all are written or none (``files.atomic_write_set``)."""
        data = {self.file(n): table_frame(n, rows).to_csv(index=False).encode("utf-8")
                for n, rows in tables.items()}
        atomic_write_set(data)
        for name in tables:
            for key in (name, f"raw:{name}"):
                self._cache.pop(key, None)
        return {name: self.file(name) for name in tables}

    @contextmanager
    def writing(self, kept: str, command: str) -> Iterator[None]:
        """A failed write inside (full disk, read-only, permissions) as a ``WriteError`` naming
        the file, what was ``kept`` and the ``command`` that continues."""
        try:
            yield
        except OSError as exc:
            if exc.errno not in WRITE_ERRNOS:
                raise
            raise WriteError(exc, kept, command) from None

    @contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the directory's exclusive advisory lock (``LOCK_FILE``, holding the pid and
        ``command``) while writing cells or runs.csv; a second writer is a ConfigError naming
        the holder. Readers never take it; the kernel releases it on any exit, kill -9 too."""
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError("out", f"{self.path} exists and is not a directory; give a "
                              "directory (it is created if missing)")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd, holder = try_lock(self.path / LOCK_FILE, f"pid {os.getpid()}: {command}")
        except OSError as exc:
            raise ConfigError("out", f"cannot create {self.path / LOCK_FILE}: {exc.strerror}; "
                              "give a writable directory") from None
        if fd is None:
            raise ConfigError("out", f"{self.path} is being written by "
                              f"{holder or 'another process'}; wait until it ends (fit, plot "
                              "and report may read it meanwhile)")
        try:
            yield  # the file keeps naming the last writer
        finally:
            os.close(fd)

    def identity(self) -> str | None:
        """The identity of the experiment the directory holds (``run.json``), None if unknown."""
        return self.json("run.json").get("identity")

    def bind(self, name: str, identity: str) -> None:
        """Record the experiment the directory holds in ``run.json``; a directory holding
        another one is a ConfigError naming both (name and short identity)."""
        held = self.json("run.json")
        if held.get("identity", identity) != identity:
            short = IDENTITY_DIGITS
            raise ConfigError("out", f"{self.path} holds experiment {held.get('experiment')} "
                              f"({held['identity'][:short]}), not {name} ({identity[:short]});"
                              " give another --out, or --overwrite to replace it")
        record = dict(zip(RUN, (name, identity)))
        if held != record:
            self.write_json("run.json", record)

    def measured_files(self) -> list[str]:
        """The names of the measured tables (runs.csv, training.csv) the directory holds."""
        return [t.file for t in TABLES.values() if not t.derived and self.has(t.name)]

    def derived_files(self) -> list[Path]:
        """The files computed from runs.csv (fits, claims, model tables, report, figures);
        only these are ever removed, never a file the suite did not write."""
        names = [t.file for t in TABLES.values() if t.derived] + list(DOCUMENTS)
        return sorted(p for p in (self.path / n for n in names) if p.exists())

    def retire_derived(self) -> list[Path]:
        """Remove the derived files (they describe a runs.csv that no longer exists)."""
        gone = self.derived_files()
        for p in gone:
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        self._cache.clear()
        return gone

    def write_json(self, name: str, obj: Any) -> Path:
        self._cache.pop(name, None)
        return atomic_write_json(self.file(name), obj)

    def write_document(self, name: str, text: str) -> Path:
        return atomic_write_text(self.file(name), text)

    def copy_in(self, name: str, source: Path) -> Path:
        """A file copied into the directory (the experiment file a sweep ran)."""
        return atomic_write_bytes(self.file(name), Path(source).read_bytes())

    def merge_cells(self) -> tuple[Path, int]:
        """Rebuild runs.csv (and training.csv) from the sound cell files."""
        for key in ("runs", "raw:runs", "training", "raw:training"):
            self._cache.pop(key, None)
        return merge_run(self.path, self.identity())


def _complete_lines(path: Path) -> None:
    """A table the project wrote ends with a newline; one that does not was cut short."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            if fh.tell() == 0:
                raise ConfigError(str(path), "is empty; rerun the step that writes it")
            fh.seek(-1, 2)
            if fh.read(1) != b"\n":
                raise ConfigError(str(path), "is truncated (its last line is incomplete); "
                                  "rerun the step that writes it")
    except FileNotFoundError:
        raise ConfigError(str(path), "does not exist") from None
