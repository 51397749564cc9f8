"""The machine and software a measurement ran on, and a short machine id that keys every fit.

Timings of different machines are never pooled (docs MEASUREMENT.md), so each cell row carries
``machine_id(collect_environment())`` of the process that measured it.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from subquad.environ import THREAD_VARIABLES
from subquad.errors import ConfigError
from subquad.memory import meminfo

LIBRARIES = ("subquad", "numpy", "scipy", "pandas", "matplotlib", "numba", "threadpoolctl",
             "scikit-learn", "submitit", "cupy-cuda12x", "cupy-cuda13x", "cupy")


def _cpu_model() -> str:
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown"


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _blas() -> list[dict]:
    """BLAS libraries loaded by numpy/scipy with vendor, version and thread count."""
    try:
        import numpy  # noqa: F401, PLC0415
        import scipy.linalg  # noqa: F401, PLC0415
        from threadpoolctl import threadpool_info  # noqa: PLC0415
    except ImportError:
        return []
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer",
            "architecture", "prefix")
    return [{k: lib.get(k) for k in keep} for lib in threadpool_info()]


def _numba() -> dict:
    try:
        import numba  # noqa: PLC0415
    except ImportError:
        return {}
    try:
        layer = numba.threading_layer()
    except (ValueError, RuntimeError):  # no parallel region has run yet
        layer = numba.config.THREADING_LAYER
    return {"version": numba.__version__, "num_threads": numba.get_num_threads(),
            "threading_layer": layer}


def _gpu() -> dict | None:
    from subquad.model.backend import emulated, gpu_available  # noqa: PLC0415

    ok, name = gpu_available()
    if not ok or emulated():  # the host stand-in for cupy is no GPU
        return None
    import cupy as cp  # noqa: PLC0415

    props = cp.cuda.runtime.getDeviceProperties(0)
    return {"name": name, "driver": cp.cuda.runtime.driverGetVersion(),
            "runtime": cp.cuda.runtime.runtimeGetVersion(),
            "memory_bytes": int(props["totalGlobalMem"])}


def _size(text: str) -> int:
    """sysfs cache size ("48K", "32768K", "1M") in bytes."""
    text = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG") or 0) * mult


def cache_levels(root: str = "/sys/devices/system/cpu/cpu0/cache") -> list[dict]:
    """Data and unified caches of cpu0 from sysfs: level, type, size (bytes), shared CPUs.

    Empty where sysfs has no cache information (not Linux, some containers).
    """
    out = []
    base = Path(root)
    for d in sorted(base.glob("index*")) if base.is_dir() else []:
        try:
            kind = (d / "type").read_text().strip()
            if kind == "Instruction":
                continue
            out.append({"level": int((d / "level").read_text()), "type": kind,
                        "size": _size((d / "size").read_text()),
                        "shared_cpus": (d / "shared_cpu_list").read_text().strip()})
        except (OSError, ValueError):
            continue
    return sorted(out, key=lambda c: c["level"])


def cpu_governor() -> str | None:
    """cpufreq scaling governor of cpu0 (None where the VM or OS does not expose one)."""
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[lib] = metadata.version(lib)
    return out


#: the paths whose uncommitted changes can change a measurement (results/ is not among them:
#: a sweep rewrites its own results, which must not mark the source as dirty)
SOURCE_PATHS = ("subquad", "experiments", "benchmarks", "pyproject.toml", "Makefile")


def _git() -> dict:
    """Commit and dirty flag of the source (``SOURCE_PATHS``) subquad runs from (None outside
    git)."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                               timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no", "--", *SOURCE_PATHS)
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def collect_environment() -> dict[str, Any]:
    """Everything about this process's machine and software that a timing depends on."""
    env: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": _usable_cores(),
        "memory_bytes": meminfo("MemTotal", "SC_PHYS_PAGES"),
        "blas": _blas(),
        "numba": _numba(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "thread_env": {k: os.environ.get(k) for k in THREAD_VARIABLES},
        "gpu": _gpu(),
        "caches": cache_levels(),
        "cpu_governor": cpu_governor(),
        "load_average": load_average(),
        "versions": _versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git": _git(),
        "date_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
    }
    env["machine"] = machine_id(env)
    return env


def machine_id(env: dict[str, Any]) -> str:
    """``<usable cores>c-<memory GiB>g[-gpu]-<fingerprint_digest(env)>``, no hostname: it differs
    whenever the fingerprint does (caches, threads, BLAS; docs MEASUREMENT.md). Older ids (e.g.
    ``2c-24g-0d940d9a``, two AMD EPYC VMs with different caches) are found by fingerprint."""
    gib = round((env.get("memory_bytes") or 0) / 2**30)
    gpu = "-gpu" if (env.get("gpu") or {}).get("name") else ""
    return f"{env.get('usable_cores')}c-{gib}g{gpu}-{fingerprint_digest(env)}"


def fingerprint_digest(env: dict[str, Any]) -> str:
    """Eight hex digits of a hash of ``fingerprint(env)``: the tail of the machine id."""
    return hashlib.sha256(json.dumps(fingerprint(env), sort_keys=True).encode()).hexdigest()[:8]


def fingerprint(env: dict[str, Any]) -> dict[str, Any]:
    """What seconds depend on (CPU model, cache sizes, cores, threads, BLAS): two runs with
    equal fingerprints may compare seconds; different ones may not (portable gates). ``env``
    may also be a calibration.json entry (an ``environment``, the ``caches`` beside it)."""
    if "environment" in env:
        env = {**env["environment"], "caches": env.get("caches")}
    blas = sorted({f"{b.get('internal_api')} {b.get('version')} {b.get('architecture')}"
                   for b in env.get("blas") or [] if b.get("user_api") == "blas"})
    return {"cpu_model": env.get("cpu_model"), "usable_cores": env.get("usable_cores"),
            "caches": [c.get("size") for c in env.get("caches") or []],
            "blas_threads": _blas_threads(env.get("blas") or []),
            "numba_threads": (env.get("numba") or {}).get("num_threads"), "blas": blas,
            "gpu": (env.get("gpu") or {}).get("name")}


def limit_threads(threads: int | None, param: str = "timing.threads") -> None:
    """Pin BLAS (threadpoolctl) and numba to ``threads`` for the rest of the process.

    ``None`` leaves the defaults (all cores). One-thread and all-thread timings are different
    series; the thread counts are part of the machine id, so fits keep them apart. More threads
    than usable cores are refused (ConfigError naming ``param``): they would time contention.
    """
    if threads is None:
        return
    if threads > _usable_cores():
        raise ConfigError(param, f"{threads} threads exceed the {_usable_cores()} usable cores "
                          "of this machine; accepted: 1 to the usable cores (or unset for all)")
    import numba  # noqa: PLC0415
    import numpy  # noqa: F401, PLC0415
    import scipy.linalg  # noqa: F401, PLC0415
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    threadpool_limits(limits=threads)
    numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))


def _blas_threads(libs: list[dict]) -> int | None:
    """Threads of the BLAS libraries (OpenMP runtimes loaded later by numba do not count)."""
    counts = [b.get("num_threads") or 0 for b in libs if b.get("user_api") == "blas"]
    return max(counts) if counts else None


_ENV: dict[tuple, dict[str, Any]] = {}


def current_environment() -> dict[str, Any]:
    """``collect_environment()`` once per process and thread setting (cells share it)."""
    key = (_blas_threads(_blas()), _numba().get("num_threads"))
    if key not in _ENV:
        _ENV[key] = collect_environment()
    return _ENV[key]
