"""The array-backend seam: one handle ``xp`` (numpy or cupy) plus host copies, sync and timing.

All dense math goes through ``Backend.xp`` so that the CPU and GPU trainers share one code path;
only kernels that must differ per device sit in ``subquad.model.kernels``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from subquad.environ import EMULATE_ENV
from subquad.errors import ConfigError, check_choice
from subquad.vocabulary import BACKENDS


@dataclass
class Backend:
    """An array module with its device operations."""

    name: str
    xp: Any
    _events: list = field(default_factory=list, repr=False)

    @property
    def is_gpu(self) -> bool:
        return self.name == "cupy"

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """Copy host data to the device (outside any timed phase)."""
        return self.xp.asarray(a, dtype=dtype)

    def to_host(self, a: Any) -> np.ndarray:
        """A numpy copy of a device array (a no-op view for numpy)."""
        if self.is_gpu:
            return self.xp.asnumpy(a)
        return np.asarray(a)

    def synchronize(self) -> None:
        """Wait for all queued device work; a no-op on the CPU."""
        if self.is_gpu:
            self.xp.cuda.get_current_stream().synchronize()

    @contextmanager
    def timer(self) -> Iterator[list[float]]:
        """Time the enclosed block in seconds; the result is ``out[0]`` after exit.

        On the GPU this synchronises before the start event and records CUDA events, so queued
        work from earlier phases is not charged to this one.
        """
        out = [0.0]
        if self.is_gpu:
            self.synchronize()
            start = self.xp.cuda.Event()
            stop = self.xp.cuda.Event()
            start.record()
            yield out
            stop.record()
            stop.synchronize()
            out[0] = self.xp.cuda.get_elapsed_time(start, stop) / 1e3
        else:
            t0 = time.perf_counter()
            yield out
            out[0] = time.perf_counter() - t0


def gemm_accumulate(Ct: Any, A: Any, B: Any, xp: Any) -> None:
    """Ct += A @ B^T in place with one BLAS call (Ct C-contiguous m_in x m_out)."""
    if xp.__name__ == "cupy":
        from cupy import cublas  # noqa: PLC0415 - not loaded by `import cupy`

        cublas.gemm("N", "T", xp.ascontiguousarray(A), xp.ascontiguousarray(B),
                         out=Ct, alpha=1.0, beta=1.0)
        return
    if Ct.flags.c_contiguous and Ct.dtype in (np.float32, np.float64):
        from scipy.linalg import blas  # noqa: PLC0415

        gemm = blas.get_blas_funcs("gemm", (Ct,))
        # Ct^T (Fortran order, same memory) += B A^T, so BLAS writes Ct in place.
        out = gemm(1.0, B, A, beta=1.0, c=Ct.T, trans_b=1, overwrite_c=1)
        if not np.shares_memory(out, Ct):
            Ct[...] = out.T
        return
    Ct += A @ B.T


def emulated() -> bool:
    """Whether ``cupy`` is the test-only host stand-in (then nothing measured is GPU data)."""
    return bool(getattr(sys.modules.get("cupy"), "SUBQUAD_EMULATED", False))


def recorded_backend(name: str) -> str:
    """The backend name a result records: 'cupy-emulated' for cupy under the stand-in."""
    return "cupy-emulated" if name == "cupy" and emulated() else name


def gpu_available() -> tuple[bool, str]:
    """Probe for a usable CUDA device by allocating on it (an import alone proves nothing).

    With SUBQUAD_EMULATE_CUPY set this first installs the host stand-in, which then "passes".
    """
    if os.environ.get(EMULATE_ENV, "") not in ("", "0"):
        # test-only code, loaded only on request (it does not import this module)
        from subquad.model.kernels.emulation.fake_cupy import (  # noqa: PLC0415
            install_from_environment,
        )

        install_from_environment()
    try:
        import cupy as cp  # noqa: PLC0415

        a = cp.arange(4, dtype=cp.float32)
        float((a * 2).sum())
        return True, cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception as exc:  # any failure means: no usable GPU here
        return False, f"{type(exc).__name__}: {exc}"


_CACHE: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """Return the backend called ``name`` ('numpy' or 'cupy'); fail early if it cannot run here."""
    check_choice("backend", name, BACKENDS)
    if name in _CACHE:
        return _CACHE[name]
    if name == "numpy":
        be = Backend("numpy", np)
    else:
        ok, why = gpu_available()
        if not ok:
            raise ConfigError(
                "backend",
                "'cupy' needs cupy and a usable CUDA GPU, and none was found "
                f"({why}); use --backend numpy, or install the 'gpu' extra on a GPU machine",
            )
        import cupy as cp  # noqa: PLC0415

        be = Backend("cupy", cp)
    _CACHE[name] = be
    return be
