"""TEST-ONLY: the CUDA C kernels of ``cuda_source`` compiled for the host CPU and run serially.

The rendered source string is compiled unchanged (one textual step: ``extern "C"`` is dropped
when only a C compiler exists) after a prelude that defines what the kernels use from CUDA:
``__global__``, ``dim3`` ``blockIdx``/``threadIdx``/``blockDim``/``gridDim`` and ``atomicAdd``.
Generated wrappers call each ``extern "C" __global__`` kernel with CUDA's ``void **args``
convention, and ``sq_launch`` runs every (block, thread) of the grid to completion, one after
the other, in a chosen order: ``forward``, ``reverse`` or ``random`` (a seeded permutation of
all pairs). The kernels use no shared memory and no ``__syncthreads``, so each order is a legal
CUDA schedule; differing results across orders expose order dependence.

Two builds, cached under ``$SUBQUAD_HOST_BUILD_DIR`` (default ``~/.cache/subquad/cuda-host``)
by a hash of compiler, flags and translation unit:

- a shared library (``-O2``, no sanitizer) loaded with ctypes, for the cupy stand-in;
- a driver executable built with ``-fsanitize=address,undefined``: launches are written to a
  file, the driver copies each array into a buffer of exactly its size (so one element past
  the end hits AddressSanitizer's redzone), runs them and writes the arrays back. A sanitizer
  report fails the launch with :class:`SanitizerReport`. Running the driver as its own process
  avoids preloading libasan into Python.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from subquad.environ import BUILD_DIR_ENV
from subquad.files import atomic_write_bytes, atomic_write_text

SCHEDULES = ("forward", "reverse", "random")

#: C type (typedefs resolved, ``const`` dropped) -> numpy dtype of a parameter or pointee
C_DTYPES = {
    "double": np.float64, "float": np.float32,
    "long long": np.int64, "long long int": np.int64, "signed long long": np.int64,
    "long": np.int64, "int64_t": np.int64,
    "unsigned long long": np.uint64, "unsigned long": np.uint64, "uint64_t": np.uint64,
    "size_t": np.uint64,
    "int": np.int32, "signed int": np.int32, "int32_t": np.int32,
    "unsigned int": np.uint32, "unsigned": np.uint32, "uint32_t": np.uint32,
    "short": np.int16, "int16_t": np.int16, "unsigned short": np.uint16, "uint16_t": np.uint16,
    "signed char": np.int8, "int8_t": np.int8, "unsigned char": np.uint8, "uint8_t": np.uint8,
    "char": np.int8, "bool": np.bool_,
}


class HostCompilerMissing(RuntimeError):
    """No C or C++ compiler on this machine: the host-compiled kernels cannot be built."""


class SanitizerReport(RuntimeError):
    """AddressSanitizer or UBSan reported an error while a kernel ran (message = the report)."""


# ---------------------------------------------------------------- signatures


@dataclass(frozen=True)
class Param:
    """One kernel parameter: its C declaration and what it resolves to."""

    name: str
    decl: str  # the type as written, e.g. 'const T* __restrict__'
    base: str  # the resolved element type, e.g. 'double'
    pointer: bool
    const: bool  # the pointee (or scalar) is const

    @property
    def dtype(self) -> np.dtype:
        """The numpy dtype the argument (or pointee) must have."""
        if self.base not in C_DTYPES:
            raise TypeError(f"parameter {self.name!r}: no numpy dtype for C type {self.base!r}")
        return np.dtype(C_DTYPES[self.base])


@dataclass(frozen=True)
class Kernel:
    """A ``extern "C" __global__`` kernel: name and parameters in order."""

    name: str
    params: tuple[Param, ...]


_KERNEL_RE = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)')
_TYPEDEF_RE = re.compile(r"typedef\s+([\w\s]+?)\s+(\w+)\s*;")


def _resolve(base: str, typedefs: dict[str, str]) -> str:
    seen = set()
    while base in typedefs and base not in seen:
        seen.add(base)
        base = typedefs[base]
    return base


def _param(text: str, typedefs: dict[str, str]) -> Param:
    text = " ".join(text.replace("*", " * ").split())
    m = re.fullmatch(r"(.*?)\s*(\w+)", text)
    if m is None or not m.group(1):
        raise ValueError(f"cannot parse kernel parameter {text!r}")
    decl, name = m.group(1), m.group(2)
    words = decl.split()
    pointer = "*" in words
    if words.count("*") > 1:
        raise ValueError(f"parameter {name!r}: pointers to pointers are not supported")
    head = words[: words.index("*")] if pointer else words
    const = "const" in head
    base = " ".join(w for w in head if w not in ("const", "volatile", "__restrict__"))
    return Param(name, decl, _resolve(base, typedefs), pointer, const)


def parse_kernels(code: str) -> dict[str, Kernel]:
    """Every ``extern "C" __global__`` kernel of a CUDA source, by name, typedefs resolved."""
    typedefs = {alias: " ".join(target.split()) for target, alias in _TYPEDEF_RE.findall(code)}
    out = {}
    for name, params in _KERNEL_RE.findall(code):
        plist = [p for p in (s.strip() for s in params.split(",")) if p]
        out[name] = Kernel(name, tuple(_param(p, typedefs) for p in plist))
    return out


# ---------------------------------------------------------------- translation unit

_PRELUDE = r"""/* subquad host emulation prelude: the CUDA built-ins the kernels use */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __cplusplus
#define SQ_EXTERN extern "C"
#else
#define SQ_EXTERN
#endif
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
typedef struct { unsigned int x, y, z; } uint3;
typedef struct { unsigned int x, y, z; } dim3;
static uint3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;
/* serial execution: a plain read-add-write is atomic; returns the old value like CUDA's */
typedef void (*sq_fn)(void **);
typedef struct { const char *name; sq_fn fn; } sq_entry;
#define atomicAdd(p, v) __extension__({ __typeof__(p) sq_p_ = (p); \
    __typeof__(*sq_p_) sq_old_ = *sq_p_; *sq_p_ = sq_old_ + (v); sq_old_; })
"""

_LAUNCHER = r"""
static uint64_t sq_mix(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Run every (block, thread) of the grid to completion; schedule 0 forward, 1 reverse,
   2 a seeded random permutation of all pairs. Returns 0, or 1 for an unknown kernel, 2 when
   the permutation cannot be allocated. */
SQ_EXTERN int sq_launch(const char *name, const unsigned int *grid, const unsigned int *block,
                        int schedule, uint64_t seed, void **args) {
    sq_fn fn = 0;
    for (size_t e = 0; e < sizeof(sq_table) / sizeof(sq_table[0]); ++e)
        if (strcmp(sq_table[e].name, name) == 0) fn = sq_table[e].fn;
    if (!fn) return 1;
    gridDim.x = grid[0]; gridDim.y = grid[1]; gridDim.z = grid[2];
    blockDim.x = block[0]; blockDim.y = block[1]; blockDim.z = block[2];
    const uint64_t nb = (uint64_t)grid[0] * grid[1] * grid[2];
    const uint64_t nt = (uint64_t)block[0] * block[1] * block[2];
    const uint64_t total = nb * nt;
    uint64_t *perm = 0;
    if (schedule == 2 && total > 0) {
        perm = (uint64_t *)malloc(total * sizeof(uint64_t));
        if (!perm) return 2;
        for (uint64_t i = 0; i < total; ++i) perm[i] = i;
        for (uint64_t i = total - 1; i > 0; --i) {
            uint64_t j = sq_mix(&seed) % (i + 1), t = perm[i];
            perm[i] = perm[j]; perm[j] = t;
        }
    }
    for (uint64_t k = 0; k < total; ++k) {
        const uint64_t t = schedule == 0 ? k : schedule == 1 ? total - 1 - k : perm[k];
        const uint64_t b = t / nt, h = t % nt;
        blockIdx.x = (unsigned int)(b % grid[0]);
        blockIdx.y = (unsigned int)((b / grid[0]) % grid[1]);
        blockIdx.z = (unsigned int)(b / ((uint64_t)grid[0] * grid[1]));
        threadIdx.x = (unsigned int)(h % block[0]);
        threadIdx.y = (unsigned int)((h / block[0]) % block[1]);
        threadIdx.z = (unsigned int)(h / ((uint64_t)block[0] * block[1]));
        fn(args);
    }
    free(perm);
    return 0;
}

#ifdef SQ_DRIVER
/* Standalone driver: argv[1] holds launches, argv[2] receives every array argument after its
   launch. Launch: u32 name length, name, u32 grid[3], u32 block[3], i32 schedule, u64 seed,
   u32 nargs, then per argument u8 kind (0 scalar, 1 array), u64 byte count, the bytes. */
static unsigned char *sq_buf; static size_t sq_len, sq_pos;
static void sq_take(void *dst, size_t n) {
    if (sq_pos + n > sq_len) { fprintf(stderr, "sq driver: truncated input\n"); exit(4); }
    memcpy(dst, sq_buf + sq_pos, n); sq_pos += n;
}
int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: driver IN OUT\n"); return 4; }
    FILE *in = fopen(argv[1], "rb"), *out = fopen(argv[2], "wb");
    if (!in || !out) { fprintf(stderr, "sq driver: cannot open files\n"); return 4; }
    fseek(in, 0, SEEK_END); sq_len = (size_t)ftell(in); fseek(in, 0, SEEK_SET);
    sq_buf = (unsigned char *)malloc(sq_len + 1);
    if (fread(sq_buf, 1, sq_len, in) != sq_len) { fprintf(stderr, "sq driver: read\n"); return 4; }
    fclose(in);
    while (sq_pos < sq_len) {
        uint32_t nlen, grid[3], block[3], nargs; int32_t schedule; uint64_t seed;
        char name[256];
        sq_take(&nlen, 4);
        if (nlen >= sizeof(name)) { fprintf(stderr, "sq driver: name too long\n"); return 4; }
        sq_take(name, nlen); name[nlen] = 0;
        sq_take(grid, 12); sq_take(block, 12); sq_take(&schedule, 4); sq_take(&seed, 8);
        sq_take(&nargs, 4);
        void **args = (void **)calloc(nargs + 1, sizeof(void *));
        void **bufs = (void **)calloc(nargs + 1, sizeof(void *));
        uint64_t *sizes = (uint64_t *)calloc(nargs + 1, sizeof(uint64_t));
        unsigned char *kinds = (unsigned char *)calloc(nargs + 1, 1);
        for (uint32_t a = 0; a < nargs; ++a) {
            sq_take(&kinds[a], 1); sq_take(&sizes[a], 8);
            bufs[a] = malloc(sizes[a] ? sizes[a] : 1); /* exactly the array: redzone after */
            sq_take(bufs[a], sizes[a]);
            if (kinds[a] == 1) { void **holder = (void **)malloc(sizeof(void *));
                                 *holder = bufs[a]; args[a] = holder; }
            else args[a] = bufs[a];
        }
        int rc = sq_launch(name, grid, block, schedule, seed, args);
        if (rc) { fprintf(stderr, "sq driver: launch of %s failed (%d)\n", name, rc); return 3; }
        for (uint32_t a = 0; a < nargs; ++a) {
            if (kinds[a] == 1) { fwrite(bufs[a], 1, sizes[a], out); free(args[a]); }
            free(bufs[a]);
        }
        free(args); free(bufs); free(sizes); free(kinds);
    }
    fclose(out); free(sq_buf);
    return 0;
}
#endif
"""


def _wrappers(kernels: dict[str, Kernel]) -> str:
    lines = ["", "/* generated: each kernel called with CUDA's void **args convention */"]
    for k in kernels.values():
        call = ", ".join(f"*({p.decl} *)a[{i}]" for i, p in enumerate(k.params))
        lines.append(f"static void sq_call_{k.name}(void **a) {{ (void)a; {k.name}({call}); }}")
    table = ", ".join(f'{{"{k.name}", sq_call_{k.name}}}' for k in kernels.values())
    lines.append(f"static const sq_entry sq_table[] = {{{table}}};")
    return "\n".join(lines) + "\n"


def translation_unit(code: str, lang: str, label: str = "kernels.cu") -> str:
    """Prelude + the source (unchanged; ``extern "C"`` dropped for C) + wrappers + launcher."""
    kernels = parse_kernels(code)
    if not kernels:
        raise ValueError('no extern "C" __global__ kernel in the source')
    body = code if lang == "c++" else re.sub(r'extern\s+"C"\s*', "", code)
    return (_PRELUDE + f'#line 1 "{label}"\n' + body + '\n#line 1 "sq_launcher.c"\n'
            + _wrappers(kernels) + _LAUNCHER)


# ---------------------------------------------------------------- compiler and cache


def find_compiler() -> tuple[str, str]:
    """(path, 'c++' or 'c'): $CXX, g++, c++, clang++, else a C compiler ($CC, gcc, cc, clang).

    Raises :class:`HostCompilerMissing` with install advice when there is none.
    """
    for lang, env, names in (("c++", "CXX", ("g++", "c++", "clang++")),
                             ("c", "CC", ("gcc", "cc", "clang"))):
        for cand in (os.environ.get(env), *names):
            if cand and shutil.which(cand):
                return shutil.which(cand), lang
    raise HostCompilerMissing("no C or C++ compiler (g++, c++, clang++, gcc, cc, clang) on PATH; "
                              "install one (Debian/Ubuntu: apt-get install g++) to build the "
                              "host-emulated CUDA kernels")


_COMMON = ["-g", "-fno-omit-frame-pointer", "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas",
           "-Wno-unused-function"]
_FLAGS = {
    "shared": ["-O2", "-shared", "-fPIC"],
    "sanitized": ["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                  "-DSQ_DRIVER"],
}


def _cache_dir() -> Path:
    root = os.environ.get(BUILD_DIR_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "subquad", "cuda-host")
    path = Path(root)
    try:
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        fallback = Path(tempfile.gettempdir()) / f"subquad-cuda-host-{os.getuid()}"
        fallback.mkdir(parents=True, exist_ok=True)
        return fallback


def _compiler_id(cc: str) -> str:
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True,
                              timeout=60).stdout.splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return cc


def build(code: str, kind: str, label: str = "kernels.cu") -> Path:
    """The cached host build of ``code``: kind 'shared' (a .so) or 'sanitized' (the driver)."""
    cc, lang = find_compiler()
    flags = [*_COMMON, *_FLAGS[kind], "-x", lang, "-std=c++17" if lang == "c++" else "-std=gnu11"]
    tu = translation_unit(code, lang, label)
    key = hashlib.sha256("\0".join([_compiler_id(cc), *flags, tu]).encode()).hexdigest()[:16]
    out = _cache_dir() / f"{kind}-{key}{'.so' if kind == 'shared' else '.exe'}"
    if out.exists():
        return out
    src = out.with_suffix(".c" if lang == "c" else ".cpp")
    atomic_write_text(src, tu)
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")
    proc = subprocess.run([cc, *flags, str(src), "-o", str(tmp)], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"host build of {label} failed ({cc} {' '.join(flags)}):\n"
                           f"{proc.stderr}")
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------- launching


def _dims(d: tuple[int, ...]) -> tuple[int, int, int]:
    x = tuple(int(v) for v in d) + (1, 1)
    return x[0], x[1], x[2]


@dataclass
class Launch:
    """One kernel launch with marshalled arguments (C-contiguous arrays, numpy scalars)."""

    name: str
    grid: tuple[int, ...]
    block: tuple[int, ...]
    args: list[Any]
    writable: list[bool]  # per argument: an array the kernel may write (copied back)


class HostModule:
    """One CUDA source compiled for the host; ``run`` launches kernels in a chosen schedule."""

    def __init__(self, code: str, sanitize: bool = False, label: str = "kernels.cu"):
        self.code, self.sanitize, self.label = code, sanitize, label
        self.kernels = parse_kernels(code)
        self._lib: Any = None
        self._exe: Path | None = None

    def _library(self) -> Any:
        if self._lib is None:
            lib = ctypes.CDLL(str(build(self.code, "shared", self.label)))
            lib.sq_launch.restype = ctypes.c_int
            lib.sq_launch.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint),
                                      ctypes.POINTER(ctypes.c_uint), ctypes.c_int,
                                      ctypes.c_uint64, ctypes.POINTER(ctypes.c_void_p)]
            self._lib = lib
        return self._lib

    def run(self, launches: list[Launch], schedule: str = "forward", seed: int = 0) -> None:
        """Run the launches in order; arrays written by a kernel are updated in place."""
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        sched = SCHEDULES.index(schedule)
        if self.sanitize:
            self._run_driver(launches, sched, seed)
            return
        lib = self._library()
        for ln in launches:
            keep, ptrs = [], (ctypes.c_void_p * max(len(ln.args), 1))()
            for i, a in enumerate(ln.args):
                # CUDA's args[i] points at the value: an array's data pointer, or the scalar
                array = isinstance(a, np.ndarray)
                box = ctypes.c_void_p(a.ctypes.data) if array else np.array(a)
                keep.append(box)
                ptrs[i] = ctypes.addressof(box) if array else box.ctypes.data
            g = (ctypes.c_uint * 3)(*_dims(ln.grid))
            b = (ctypes.c_uint * 3)(*_dims(ln.block))
            rc = lib.sq_launch(ln.name.encode(), g, b, sched, seed, ptrs)
            if rc:
                raise RuntimeError(f"host launch of {ln.name} failed (code {rc})")

    def _run_driver(self, launches: list[Launch], sched: int, seed: int) -> None:
        if self._exe is None:
            self._exe = build(self.code, "sanitized", self.label)
        parts = []
        for ln in launches:
            name = ln.name.encode()
            parts.append(struct.pack("<I", len(name)) + name)
            parts.append(struct.pack("<3I3IiQI", *_dims(ln.grid), *_dims(ln.block), sched,
                                     seed & (2**64 - 1), len(ln.args)))
            for a in ln.args:
                raw = np.asarray(a).tobytes()  # C order, whatever the strides
                parts.append(struct.pack("<BQ", int(isinstance(a, np.ndarray)), len(raw)) + raw)
        with tempfile.TemporaryDirectory(prefix="sq-launch-") as tmp:
            src, dst = Path(tmp) / "in.bin", Path(tmp) / "out.bin"
            atomic_write_bytes(src, b"".join(parts))
            env = {**os.environ,
                   "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:abort_on_error=0",
                   "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"}
            env.pop("LD_PRELOAD", None)
            proc = subprocess.run([str(self._exe), str(src), str(dst)], capture_output=True,
                                  text=True, env=env, timeout=600)
            report = proc.stderr
            if proc.returncode != 0 or "Sanitizer" in report or "runtime error" in report:
                names = ", ".join(ln.name for ln in launches)
                raise SanitizerReport(f"sanitized host run of [{names}] failed "
                                      f"(exit {proc.returncode}):\n{report}")
            data, pos = dst.read_bytes(), 0
        for ln in launches:
            for a, w in zip(ln.args, ln.writable):
                if isinstance(a, np.ndarray):
                    if w:
                        a[...] = np.frombuffer(data[pos:pos + a.nbytes], a.dtype).reshape(a.shape)
                    pos += a.nbytes
