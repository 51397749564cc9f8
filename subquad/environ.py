"""The environment variables the suite (or a library at import) reads, checked before any
heavy import: a bad value is a ConfigError naming the variable, never a library's traceback."""

from __future__ import annotations

import os
from collections.abc import Mapping

from subquad.errors import ConfigError, check_choice

#: thread counts of BLAS, OpenMP and numba (recorded in environment.json, part of the machine id)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")
#: 1 (or a schedule) runs the cupy backend on the test-only host stand-in (docs/GPU.md)
EMULATE_ENV = "SUBQUAD_EMULATE_CUPY"
BUILD_DIR_ENV = "SUBQUAD_HOST_BUILD_DIR"
CHOICES = {EMULATE_ENV: ("0", "1", "forward", "reverse", "random"),
           "NUMBA_THREADING_LAYER": ("default", "safe", "forksafe", "threadsafe", "tbb", "omp",
                                     "workqueue")}
DIRECTORIES = ("XDG_CACHE_HOME", BUILD_DIR_ENV)


def check_environment(env: Mapping[str, str] = os.environ) -> None:
    """Raise ConfigError (``$NAME: ...``) for the first variable set to a value that is refused."""
    for name in THREAD_VARIABLES:  # OMP_NUM_THREADS may list one count per nesting level
        value = env.get(name, "").strip()
        counts = value.split(",") if name == "OMP_NUM_THREADS" else [value]
        if value and not all(c.strip().isdigit() and int(c) >= 1 for c in counts):
            raise ConfigError(f"${name}", f"must be a number of threads >= 1 (or unset), "
                              f"got {value!r}")
    for name, accepted in CHOICES.items():
        if env.get(name):
            check_choice(f"${name}", env[name], accepted, "value")
    for name in DIRECTORIES:
        value = env.get(name, "")
        if value and (not os.path.isabs(value) or os.path.exists(value)
                      and not os.path.isdir(value)):
            raise ConfigError(f"${name}", f"must be the absolute path of a directory, got "
                              f"{value!r}")
