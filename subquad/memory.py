"""How much memory a configuration needs, and how much this machine (or GPU) can give it."""

from __future__ import annotations

import contextlib
import os


def available_bytes(backend: str = "numpy") -> int:
    """Bytes that can be allocated now: MemAvailable on the host, free memory on the GPU."""
    if backend == "cupy":
        try:
            import cupy as cp  # noqa: PLC0415

            free, _total = cp.cuda.runtime.memGetInfo()
            return int(free)
        except Exception:
            return 0
    return meminfo("MemAvailable", "SC_AVPHYS_PAGES", default=1 << 62)


def meminfo(key: str, sysconf_pages: str, default: int = 0) -> int:
    """A /proc/meminfo field in bytes (e.g. MemTotal), else the sysconf page count, else default."""
    with contextlib.suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf(sysconf_pages) * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return default


def fmt_bytes(b: float) -> str:
    """Human-readable size (GiB/MiB/KiB)."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= scale:
            return f"{b / scale:.2f} {unit}"
    return f"{int(b)} B"
