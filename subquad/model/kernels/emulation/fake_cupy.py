"""TEST-ONLY stand-in for the part of ``cupy``/``cupyx`` that subquad uses, on numpy and scipy.

Device arrays are :class:`ndarray`, a numpy subclass, so host arrays stay distinguishable: as in
CuPy, a host numpy array in device arithmetic, in ``ascontiguousarray``/``broadcast_to``/
``concatenate`` or as a kernel argument is a ``TypeError``; ``empty`` is filled with NaN (or a
sentinel) so unwritten output shows. ``RawModule`` is :mod:`rawkernel`'s double, running the
real CUDA sources on the host; ``cupyx.scipy.sparse`` is scipy.sparse, ``cupyx.scatter_add``
is ``np.add.at``, ``cupy.cublas.gemm`` a matmul, CUDA events are ``perf_counter`` stamps.

:func:`install` puts ``cupy``, ``cupy.cuda``, ``cupy.cublas``, ``cupyx``, ``cupyx.scipy``,
``cupyx.scipy.sparse``, ``cupyx.scipy.linalg`` and ``cupyx.cusparse`` into ``sys.modules``; a
real cupy is never shadowed. Nothing measured under it is GPU evidence (docs/GPU.md).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse

from subquad.environ import EMULATE_ENV
from subquad.memory import meminfo
from subquad.model.kernels.emulation import rawkernel

#: the device name the stand-in reports; results record the backend as EMULATED_BACKEND
DEVICE_NAME = "cupy-emulated (host CPU; no GPU)"
EMULATED_BACKEND = "cupy-emulated"
_MODULES = ("cupy", "cupy.cuda", "cupy.cuda.runtime", "cupy.cublas", "cupyx", "cupyx.scipy",
            "cupyx.scipy.sparse", "cupyx.scipy.linalg", "cupyx.cusparse")
#: modules that bound the old ``cupy`` at import and must be imported afresh
_DEPENDENTS = ("subquad.model.kernels.gpu",)


class ndarray(np.ndarray):  # noqa: N801 - cupy's name
    """A device array: a numpy array that refuses to mix with host arrays, as CuPy does."""

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        args = [_base(x, ufunc.__name__) for x in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(_base(o, ufunc.__name__) for o in kwargs["out"])
        return _dev(getattr(ufunc, method)(*args, **kwargs))

    def get(self) -> np.ndarray:
        """A host copy (``cupy.ndarray.get``)."""
        return np.array(self.view(np.ndarray))


def _base(x: Any, what: str) -> Any:
    if isinstance(x, ndarray):
        return x.view(np.ndarray)
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)} in cupy {what}: a host numpy array "
                        "(cupy does not convert implicitly; use cupy.asarray)")
    return x


def _dev(x: Any) -> Any:
    """Device views of numpy results (arrays, and arrays inside tuples/lists)."""
    if isinstance(x, np.ndarray) and not isinstance(x, ndarray):
        return x.view(ndarray)
    if isinstance(x, tuple):
        return tuple(_dev(v) for v in x)
    if isinstance(x, list):
        return [_dev(v) for v in x]
    return x


def _device_only(x: Any, what: str) -> np.ndarray:
    if not isinstance(x, ndarray):
        raise TypeError(f"cupy.{what} expects a cupy.ndarray, got {type(x)}")
    return x.view(np.ndarray)


def _wrap(fn: Any) -> Any:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        return _dev(fn(*args, **kwargs))

    return call


def _module(name: str, **attrs: Any) -> types.ModuleType:
    """A module ``name`` holding ``attrs``."""
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def _namespace(name: str, source: Any, **extra: Any) -> types.ModuleType:
    """A module whose callables are ``source``'s with device outputs (``extra`` as they are)."""

    def getattr_(attr: str) -> Any:
        value = getattr(source, attr)
        if callable(value) and not isinstance(value, type) and not isinstance(value, np.ufunc):
            return _wrap(value)
        return value

    return _module(name, __getattr__=getattr_, **extra)


# ---------------------------------------------------------------- array creation


def asarray(a: Any, dtype: Any = None, order: Any = None) -> ndarray:
    """The array itself when already on the device with that dtype, else a device copy."""
    if isinstance(a, ndarray) and (dtype is None or np.dtype(dtype) == a.dtype) and order is None:
        return a
    return array(a, dtype, order=order or "K")


def array(a: Any, dtype: Any = None, copy: bool = True, order: str = "K") -> ndarray:
    """A device copy (``cupy.array``)."""
    src = a.view(np.ndarray) if isinstance(a, ndarray) else a
    return np.array(src, dtype=dtype, order=order, copy=True).view(ndarray)


def asnumpy(a: Any, stream: Any = None) -> np.ndarray:
    """A host copy of a device array (numpy arrays and scalars pass through as arrays)."""
    del stream
    return np.array(a.view(np.ndarray) if isinstance(a, ndarray) else a)


def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
    """``a`` itself when C-contiguous with that dtype, else a contiguous device copy."""
    base = _device_only(a, "ascontiguousarray")
    if base.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
        return a
    return np.ascontiguousarray(base, dtype=dtype).view(ndarray)


def broadcast_to(a: Any, shape: Any) -> ndarray:
    return np.broadcast_to(_device_only(a, "broadcast_to"), shape).view(ndarray)


def concatenate(arrays: Any, axis: int = 0, out: Any = None, dtype: Any = None) -> ndarray:
    parts = [_device_only(a, "concatenate") for a in arrays]
    return np.concatenate(parts, axis=axis, dtype=dtype).view(ndarray)


def empty(shape: Any, dtype: Any = float, order: str = "C") -> ndarray:
    """Uninitialised memory, emulated as NaN (or -7777 for integers) so unwritten data shows."""
    out = np.empty(shape, dtype=dtype, order=order)
    out.fill(np.nan if out.dtype.kind in "fc" else (True if out.dtype.kind == "b" else -7777))
    return out.view(ndarray)


def empty_like(a: Any, dtype: Any = None) -> ndarray:
    return empty(a.shape, dtype or a.dtype)


# ---------------------------------------------------------------- cuda: events, streams, runtime


class _Stream:
    def synchronize(self) -> None:
        """Everything already ran: host execution is synchronous."""


class Event:
    """A CUDA event stand-in: a ``perf_counter`` stamp taken at ``record``."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.t: float | None = None

    def record(self, stream: Any = None) -> None:
        self.t = time.perf_counter()

    def synchronize(self) -> None:
        if self.t is None:
            raise RuntimeError("cudaErrorInvalidResourceHandle: event never recorded")


def get_elapsed_time(start: Event, stop: Event) -> float:
    """Milliseconds between two recorded events (host time, not GPU time)."""
    start.synchronize()
    stop.synchronize()
    return (stop.t - start.t) * 1e3


def _meminfo(key: str) -> int:
    """Host memory stands in for device memory (16 GiB when unknown)."""
    return meminfo(key, "SC_PHYS_PAGES" if key == "MemTotal" else "SC_AVPHYS_PAGES", 1 << 34)

class _Device:
    def __init__(self, device: int = 0):
        self.id = device
        self.attributes = {"L2CacheSize": 0, "MultiProcessorCount": 1}

    def synchronize(self) -> None:
        """Nothing is queued on the host."""

    @property
    def mem_info(self) -> tuple[int, int]:
        return _meminfo("MemAvailable"), _meminfo("MemTotal")


# ---------------------------------------------------------------- libraries


def _gemm(transa: str, transb: str, a: Any, b: Any, out: Any = None, alpha: float = 1.0,
          beta: float = 0.0) -> ndarray:
    """``out = alpha op(a) op(b) + beta out`` in place (``cupy.cublas.gemm``)."""
    A, B = _device_only(a, "cublas.gemm"), _device_only(b, "cublas.gemm")
    opa = A.T if transa.upper() in ("T", "C") else A
    opb = B.T if transb.upper() in ("T", "C") else B
    if A.ndim != 2 or B.ndim != 2 or opa.shape[1] != opb.shape[0]:
        raise ValueError(f"cublas.gemm: shapes {opa.shape} and {opb.shape} do not match")
    if A.dtype != B.dtype or (out is not None and out.dtype != A.dtype):
        raise TypeError("cublas.gemm: a, b and out must share one dtype, got "
                        f"{A.dtype}, {B.dtype}, {None if out is None else out.dtype}")
    prod = opa @ opb
    if out is None:
        return (alpha * prod).view(ndarray)
    O = _device_only(out, "cublas.gemm")
    if O.shape != prod.shape:
        raise ValueError(f"cublas.gemm: out has shape {O.shape}, expected {prod.shape}")
    O *= beta
    O += alpha * prod
    return out


def scatter_add(a: Any, slices: Any, value: Any) -> None:
    """``a[slices] += value`` with repeated indices accumulated (``cupyx.scatter_add``)."""
    idx = _base(slices, "scatter_add") if isinstance(slices, np.ndarray) else slices
    np.add.at(_device_only(a, "scatter_add"), idx, _base(value, "scatter_add"))


@contextlib.contextmanager
def errstate(**kwargs: Any) -> Iterator[None]:
    """numpy's linalg already raises on a non-positive-definite Cholesky."""
    yield


class csr_matrix(scipy.sparse.csr_matrix):  # noqa: N801 - cupyx's name
    """``cupyx.scipy.sparse.csr_matrix``: device data in, device arrays out of products."""

    def __init__(self, arg1: Any, shape: Any = None, dtype: Any = None, copy: bool = False):
        if isinstance(arg1, tuple):
            arg1 = tuple(_device_only(x, "sparse.csr_matrix") if isinstance(x, np.ndarray)
                         else x for x in arg1)
        super().__init__(arg1, shape=shape, dtype=dtype, copy=copy)

    def _dense_in(self, other: Any) -> Any:
        return _base(other, "sparse product") if isinstance(other, np.ndarray) else other

    def __matmul__(self, other: Any) -> Any:
        return _dev(super().__matmul__(self._dense_in(other)))

    def dot(self, other: Any) -> Any:
        return _dev(super().dot(self._dense_in(other)))


def spmm(a: Any, b: Any, c: Any = None, alpha: float = 1, beta: float = 0,
         transa: bool = False, transb: bool = False) -> ndarray:
    """``alpha op(a) op(b) + beta c``; b must be F-contiguous, as cuSPARSE's wrapper demands."""
    B = _device_only(b, "cusparse.spmm")
    if a.ndim != 2 or B.ndim != 2:
        raise ValueError("expected 2-D matrices")
    if not B.flags.f_contiguous:
        raise ValueError("expected F-contiguous array for b")
    if c is not None and not c.flags.f_contiguous:
        raise ValueError("expected F-contiguous array for c")
    A = scipy.sparse.csr_matrix(a)
    if A.dtype != B.dtype:
        raise TypeError(f"cusparse.spmm: dtypes differ ({A.dtype}, {B.dtype})")
    opa = A.T if transa else A
    opb = B.T if transb else B
    out = np.asfortranarray(alpha * (opa @ opb))
    if c is not None:
        C = _device_only(c, "cusparse.spmm")
        C *= beta
        C += out
        return c
    return out.view(ndarray)


# ---------------------------------------------------------------- install


def _build() -> dict[str, types.ModuleType]:
    runtime = _module(
        "cupy.cuda.runtime",
        getDeviceProperties=lambda device=0: {
            "name": DEVICE_NAME.encode(), "totalGlobalMem": _meminfo("MemTotal"),
            "major": 0, "minor": 0},
        memGetInfo=lambda: (_meminfo("MemAvailable"), _meminfo("MemTotal")),
        driverGetVersion=lambda: 0, runtimeGetVersion=lambda: 0, getDeviceCount=lambda: 1)
    cuda = _module("cupy.cuda", Event=Event, get_elapsed_time=get_elapsed_time,
                   get_current_stream=lambda: _Stream(), Stream=_Stream, Device=_Device,
                   runtime=runtime)
    cublas = _module("cupy.cublas", gemm=_gemm)
    cupy = _namespace("cupy", np, ndarray=ndarray, asarray=asarray, array=array,
                      asnumpy=asnumpy, ascontiguousarray=ascontiguousarray,
                      broadcast_to=broadcast_to, concatenate=concatenate, empty=empty,
                      empty_like=empty_like, RawModule=rawkernel.RawModule, cuda=cuda,
                      cublas=cublas, linalg=_namespace("cupy.linalg", np.linalg),
                      fft=_namespace("cupy.fft", np.fft),
                      random=_namespace("cupy.random", np.random),
                      SUBQUAD_EMULATED=True, __version__="0+subquad.emulated")
    sparse = _module("cupyx.scipy.sparse", csr_matrix=csr_matrix,
                     issparse=scipy.sparse.issparse)
    linalg = _namespace("cupyx.scipy.linalg", scipy.linalg)
    sci = _module("cupyx.scipy", sparse=sparse, linalg=linalg)
    cusparse = _module("cupyx.cusparse", spmm=spmm)
    cupyx = _module("cupyx", scatter_add=scatter_add, errstate=errstate, scipy=sci,
                    cusparse=cusparse, SUBQUAD_EMULATED=True)
    return {mod.__name__: mod
            for mod in (cupy, cuda, runtime, cublas, cupyx, sci, sparse, linalg, cusparse)}


def installed() -> bool:
    """Whether ``sys.modules['cupy']`` is this stand-in."""
    return bool(getattr(sys.modules.get("cupy"), "SUBQUAD_EMULATED", False))


def _forget_dependents() -> None:
    """Drop modules and caches that hold on to the previous ``cupy``."""
    for name in _DEPENDENTS:
        sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        if parent in sys.modules and hasattr(sys.modules[parent], child):
            delattr(sys.modules[parent], child)
    backend = sys.modules.get("subquad.model.backend")
    if backend is not None:
        backend._CACHE.pop("cupy", None)


def install(schedule: str = "random", seed: int = 0, sanitize: bool = False) -> None:
    """Put the stand-in in ``sys.modules`` (an error if a real cupy is already imported).

    ``schedule`` and ``seed`` choose the order of the emulated threads; ``sanitize`` runs every
    launch in the AddressSanitizer/UBSan driver (slow: one process per launch).
    """
    real = sys.modules.get("cupy")
    if real is not None and not getattr(real, "SUBQUAD_EMULATED", False):
        raise RuntimeError("a real cupy is imported; the emulation never replaces it")
    if schedule not in ("forward", "reverse", "random"):
        raise ValueError(f"schedule must be forward, reverse or random, got {schedule!r}")
    rawkernel.SETTINGS.schedule, rawkernel.SETTINGS.seed = schedule, seed
    rawkernel.SETTINGS.sanitize, rawkernel.SETTINGS.array_type = sanitize, ndarray
    if installed():
        return
    sys.modules.update(_build())
    _forget_dependents()


def uninstall() -> None:
    """Remove the stand-in (and modules bound to it) from ``sys.modules``."""
    if not installed():
        return
    for name in _MODULES:
        sys.modules.pop(name, None)
    _forget_dependents()
    rawkernel.SETTINGS.__init__()  # type: ignore[misc]


def install_from_environment(value: str | None = None) -> bool:
    """Install when ``SUBQUAD_EMULATE_CUPY`` is '1' (or 'forward'/'reverse'/'random')."""
    value = os.environ.get(EMULATE_ENV, "") if value is None else value
    if value in ("", "0"):
        return False
    install(schedule="random" if value == "1" else value)
    return True
