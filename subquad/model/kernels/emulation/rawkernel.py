"""TEST-ONLY: a ``cupy.RawModule``/``RawKernel`` double that enforces CuPy's argument rules.

CuPy turns each launch argument into bytes without looking at the kernel's C signature: an
array becomes its data pointer (strides ignored), a Python ``int`` a ``long long``, a Python
``float`` a ``double``, a ``bool`` a ``bool``, a numpy scalar its own dtype; anything else is
"Unsupported type". A mismatch with the C parameter is therefore silent garbage on a GPU. This
double parses each kernel's signature (``host.parse_kernels``) and raises, naming the kernel
and the parameter, on a wrong element dtype or item size, a non-C-contiguous array, a host
(non-device) array, a wrong argument count, a ``__restrict__`` pointer written while another
argument overlaps it, a size past 2^31 - 1 where an ``int`` indexes it, or a launch shape CUDA
rejects. It then runs the kernel with :class:`host.HostModule` in the configured schedule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from subquad.model.kernels.emulation.host import HostModule, Kernel, Launch, Param, parse_kernels

INT32_MAX = 2**31 - 1
MAX_BLOCK = (1024, 1024, 64)
MAX_GRID = (2**31 - 1, 65535, 65535)
MAX_THREADS_PER_BLOCK = 1024


@dataclass
class Settings:
    """How the double runs kernels: the schedule, its seed, and the sanitizer build or not."""

    schedule: str = "random"
    seed: int = 0
    sanitize: bool = False
    array_type: type = np.ndarray  # the class that counts as a device array


SETTINGS = Settings()


class ArgumentError(TypeError):
    """A launch argument CuPy would pass as the wrong bytes for its C parameter."""


#: the dtype CuPy passes a Python scalar as (an int >= 2^63 as uint64), and its C name
_PY_SCALARS = {bool: np.bool_, float: np.float64, complex: np.complex128, int: np.int64}
_C_NAMES = {"bool": "bool", "float64": "double", "complex128": "complex<double>",
            "int64": "long long", "uint64": "unsigned long long"}


def scalar_dtype(value: Any) -> np.dtype:
    """The dtype CuPy marshals a scalar launch argument as (its rule for Python scalars)."""
    t = type(value)
    if t is int and value >= 2**63:
        return np.dtype(np.uint64)
    if t in _PY_SCALARS:
        return np.dtype(_PY_SCALARS[t])
    if isinstance(value, np.generic):
        return value.dtype
    raise ArgumentError(f"Unsupported type {t}")


def _where(kernel: Kernel, p: Param) -> str:
    return f"kernel {kernel.name}, parameter {p.name!r} ({p.decl})"


def _check_array(kernel: Kernel, p: Param, a: Any, array_type: type) -> np.ndarray:
    where = _where(kernel, p)
    if not isinstance(a, np.ndarray):
        raise ArgumentError(f"{where}: expects a device array, got {type(a).__name__} "
                            f"{a!r:.60}; CuPy would pass it by value where a pointer is read")
    if not isinstance(a, array_type):
        raise ArgumentError(f"{where}: got a host numpy array; CuPy accepts only device "
                            "(cupy) arrays as pointer arguments (copy it with cupy.asarray)")
    want = p.dtype
    if a.dtype != want:
        raise ArgumentError(f"{where}: expects {want.name} elements ({p.base}, "
                            f"{want.itemsize} bytes), got a {a.dtype.name} array "
                            f"({a.dtype.itemsize} bytes); CuPy passes only the pointer, so the "
                            "kernel would misread the bytes")
    if not a.flags.c_contiguous:
        raise ArgumentError(f"{where}: got a non-C-contiguous array (shape {a.shape}, strides "
                            f"{a.strides}); a RawKernel ignores strides and would read the "
                            "memory as C order (a transposed view reads as the original)")
    if p.base in ("int", "signed int", "int32_t", "unsigned int", "unsigned", "uint32_t") \
            and a.size > INT32_MAX:
        raise ArgumentError(f"{where}: {a.size} elements cannot be indexed by a 32-bit int")
    return a


def _check_scalar(kernel: Kernel, p: Param, a: Any) -> np.generic:
    where = _where(kernel, p)
    if isinstance(a, np.ndarray):
        raise ArgumentError(f"{where}: expects a {p.base} value, got an array (CuPy would pass "
                            "its device pointer)")
    try:
        got = scalar_dtype(a)
    except ArgumentError as exc:
        raise ArgumentError(f"{where}: {exc}") from None
    want = p.dtype
    if got != want:
        how = (f"a Python {type(a).__name__} is passed as {_C_NAMES.get(got.name, got.name)}"
               if not isinstance(a, np.generic) else f"a numpy {got.name} is passed as such")
        raise ArgumentError(f"{where}: expects {p.base} ({want.itemsize} bytes) but {how} "
                            f"({got.itemsize} bytes) and CuPy copies the bytes unchecked; pass "
                            f"numpy.{want.name}(value)")
    return np.array(a, dtype=got)[()]


def _index_is_32bit(body: str, axis: str) -> bool:
    """Whether the kernel computes blockIdx.axis * blockDim.axis without a 64-bit cast first."""
    for m in re.finditer(rf"(\([\w\s]+\)\s*)?blockIdx\.{axis}\s*\*\s*blockDim\.{axis}", body):
        cast = (m.group(1) or "").strip("() \t")
        if cast not in ("i64", "long long", "int64_t", "size_t", "unsigned long long",
                        "long", "uint64_t", "ptrdiff_t"):
            return True
    return False


def _bodies(code: str) -> dict[str, str]:
    """The body text of each kernel (brace-matched after its signature)."""
    out = {}
    for m in re.finditer(r'__global__\s+void\s+(\w+)\s*\([^)]*\)\s*\{', code):
        depth, i = 1, m.end()
        while depth and i < len(code):
            depth += {"{": 1, "}": -1}.get(code[i], 0)
            i += 1
        out[m.group(1)] = code[m.end():i - 1]
    return out


def _dims(kernel: Kernel, what: str, d: Any, limits: tuple[int, int, int]) -> tuple[int, ...]:
    dims = (d,) if isinstance(d, (int, np.integer)) else tuple(d)
    if not 1 <= len(dims) <= 3 or not all(isinstance(v, (int, np.integer)) for v in dims):
        raise ArgumentError(f"kernel {kernel.name}: {what} must be 1 to 3 integers, got {d!r}")
    dims = tuple(int(v) for v in dims)
    for axis, (v, lim) in enumerate(zip(dims, limits)):
        if not 1 <= v <= lim:
            raise ArgumentError(f"kernel {kernel.name}: {what}[{axis}] = {v} is outside CUDA's "
                                f"limit 1..{lim} (invalid configuration argument)")
    return dims


class RawKernel:
    """One kernel of a :class:`RawModule`: ``kernel(grid, block, args)`` like CuPy's."""

    def __init__(self, module: RawModule, kernel: Kernel, body: str):
        self.module, self.kernel, self.body = module, kernel, body
        self.name = kernel.name

    def marshal(self, args: Any) -> list[Any]:
        """CuPy's view of ``args``: validated arrays and numpy scalars (raises ArgumentError)."""
        k = self.kernel
        if not isinstance(args, (tuple, list)):
            raise ArgumentError(f"kernel {k.name}: args must be a tuple, got {type(args)}")
        if len(args) != len(k.params):
            raise ArgumentError(f"kernel {k.name} takes {len(k.params)} arguments "
                                f"({', '.join(p.name for p in k.params)}), got {len(args)}")
        out = [_check_array(k, p, a, SETTINGS.array_type) if p.pointer else _check_scalar(k, p, a)
               for p, a in zip(k.params, args)]
        ptrs = [(p, a) for p, a in zip(k.params, out) if p.pointer]
        for i, (p, a) in enumerate(ptrs):
            if p.const or "__restrict__" not in p.decl:
                continue
            for q, b in ptrs[:i] + ptrs[i + 1:]:
                if a.size and b.size and np.may_share_memory(a, b):
                    raise ArgumentError(f"{_where(k, p)}: written through a __restrict__ "
                                        f"pointer while parameter {q.name!r} overlaps it")
        if any(p.base in ("int", "unsigned int", "int32_t") and not p.pointer
               for p in k.params):
            for p, a in zip(k.params, out):
                if p.pointer and a.size > INT32_MAX:
                    raise ArgumentError(f"{_where(k, p)}: {a.size} elements, but the kernel "
                                        "takes 32-bit int sizes")
        return out

    def __call__(self, grid: Any, block: Any, args: Any, *, shared_mem: int = 0,
                 stream: Any = None, enable_cooperative_groups: bool = False) -> None:
        k = self.kernel
        g = _dims(k, "grid", grid, MAX_GRID)
        b = _dims(k, "block", block, MAX_BLOCK)
        if int(np.prod(b)) > MAX_THREADS_PER_BLOCK:
            raise ArgumentError(f"kernel {k.name}: block {b} has more than "
                                f"{MAX_THREADS_PER_BLOCK} threads")
        if shared_mem:
            raise ArgumentError(f"kernel {k.name}: the emulation runs no dynamic shared memory")
        for axis, (gv, bv) in zip("xyz", zip(g, b)):
            if gv * bv > INT32_MAX and _index_is_32bit(self.body, axis):
                raise ArgumentError(f"kernel {k.name}: {gv * bv} threads along {axis}, but the "
                                    f"kernel computes blockIdx.{axis} * blockDim.{axis} in 32 "
                                    "bits (cast to a 64-bit type first)")
        vals = self.marshal(args)
        writable = [p.pointer and not p.const for p in k.params]
        self.module.host().run([Launch(k.name, g, b, vals, writable)], SETTINGS.schedule,
                               self.module.next_seed())


_HOSTS: dict[tuple[str, bool], HostModule] = {}


class RawModule:
    """``cupy.RawModule(code=...)``: the module's kernels, run on the host."""

    def __init__(self, code: str | None = None, *, path: str | None = None,
                 options: tuple = (), backend: str = "nvrtc", **kwargs: Any):
        if code is None:
            raise ArgumentError("the emulated RawModule needs code= (no cubin/ptx path)")
        del path, options, backend, kwargs
        self.code = code
        self.kernels = parse_kernels(code)
        self._bodies = _bodies(code)
        self._launches = 0

    def host(self) -> HostModule:
        """The host build for the current settings (cached per source and sanitizer choice)."""
        key = (self.code, SETTINGS.sanitize)
        if key not in _HOSTS:
            _HOSTS[key] = HostModule(self.code, sanitize=SETTINGS.sanitize)
        return _HOSTS[key]

    def next_seed(self) -> int:
        """A different permutation for every launch of the random schedule (seeded)."""
        self._launches += 1
        return SETTINGS.seed * 1_000_003 + self._launches

    def get_function(self, name: str) -> RawKernel:
        """The kernel ``name``; a clear error for a name the source does not define."""
        if name not in self.kernels:
            raise ArgumentError(f"no kernel {name!r} in the module (it has "
                                f"{', '.join(self.kernels)})")
        return RawKernel(self, self.kernels[name], self._bodies.get(name, ""))
