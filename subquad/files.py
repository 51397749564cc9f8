"""Every file the project writes goes through here: atomic, fsynced, with the user's umask.

A reader sees the old file or the new one, never half of one; a failed write (a kill, a full
disk) leaves the previous file or none. ``read_table`` turns unreadable CSVs into one clear
``ConfigError`` naming the file instead of a pandas traceback.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from subquad.errors import ConfigError

#: CSV tables parsed per path since the process started (a test holds a command to one each)
PARSES: Counter[str] = Counter()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(fh)`` on a temporary file beside ``path``, fsync, chmod, rename over it.
    An OSError names ``path`` (not the temporary)."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename != str(path):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_set(items: Mapping[Path, bytes]) -> list[Path]:
    """Several files as one set: each written beside its place first, then all renamed; a
    failed write removes what it staged and leaves every previous file as it was."""
    staged: dict[Path, Path] = {}
    try:
        for path, data in items.items():
            path = Path(path)
            staged[path] = path.with_name(f".{path.name}.set.tmp")
            atomic_write_bytes(staged[path], data)
    except BaseException as exc:
        for tmp in staged.values():
            tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from None
        raise
    for path, tmp in staged.items():
        os.replace(tmp, path)
    for parent in {p.parent for p in staged}:
        _fsync_dir(parent)
    return list(staged)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported here (e.g. Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def try_lock(path: Path, note: str) -> tuple[int | None, str]:
    """An exclusive advisory lock (flock) on ``path`` (created if missing) with ``note``
    written into it: (fd, note), released by closing fd or by any exit of the process; (None,
    the holder's note) while another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        os.close(fd)
        return None, holder
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{note}\n".encode(), 0)
    return fd, note


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda fh: fh.write(data))


def atomic_write_text(path: Path, text: str) -> Path:
    """``text`` (UTF-8, newlines as given) to ``path``, atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_frame(path: Path, frame: Any) -> Path:
    """A pandas DataFrame as CSV (no index), atomically."""
    return atomic_write_text(path, frame.to_csv(index=False))


def atomic_savefig(fig: Any, path: Path, **kwargs: Any) -> Path:
    """A matplotlib figure rendered in memory, then written atomically (format from suffix)."""
    buf = io.BytesIO()
    fmt = Path(path).suffix.lstrip(".")
    if fmt == "pdf":  # no creation date: the same figure gives the same bytes
        kwargs.setdefault("metadata", {"CreationDate": None})
    fig.savefig(buf, format=fmt, **kwargs)
    return atomic_write_bytes(path, buf.getvalue())


def read_table(path: Path, what: str, required: tuple[str, ...] = (), **kwargs: Any) -> Any:
    """Read a CSV with pandas; an empty, binary, truncated or column-less file is a ConfigError.

    ``what`` names the file for the message (e.g. "runs.csv"); ``required`` are columns that
    must exist.
    """
    import pandas as pd  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise ConfigError(what, f"{path} does not exist")
    PARSES[str(path)] += 1
    try:
        frame = pd.read_csv(path, **kwargs)
    except pd.errors.EmptyDataError:
        raise ConfigError(what, f"{path} is empty; rerun the step that writes it") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(what, f"{path} is not a readable CSV table ({first})") from None
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ConfigError(what, f"{path} lacks the column(s) {', '.join(missing)}; it is "
                          "truncated or not a subquad table")
    return frame
