"""The trainers of the suite, registered once: ``train``, ``sweep``, ``fit``, ``report`` and
``check`` learn every method from this registry.

A method is its iteration kernels (dense or the paper's sparse ones), its default step size and
the solvers it accepts. Adding one is a ``register(Method(...))`` call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from subquad.errors import check_choice
from subquad.model.solve import SOLVERS


@dataclass(frozen=True)
class Method:
    """One trainer: ``kernels(cfg)`` builds its kernels from a ``TrainConfig``."""

    name: str
    kernels: Callable[[Any], Any]
    default_lr: float
    #: solvers it accepts besides ``auto``; ("gradient",) = plain gradient steps, no system
    solvers: tuple[str, ...]
    #: sparse kernels: it takes --update, --forward-kernel and the lazy rank options
    sparse: bool = False

    @property
    def solves(self) -> bool:
        return self.solvers != ("gradient",)

    @property
    def options(self) -> tuple[str, ...]:
        """The option keys of its ``options`` string (CG keys are added for CG solvers)."""
        if self.sparse:
            return ("solver", "update", "rank_max", "forward_kernel", "lr", "damping")
        return ("solver", "lr", "damping")


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add (or replace) a method; every command picks it up."""
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``; ConfigError listing the accepted ones."""
    check_choice("method", name, tuple(METHODS))
    return METHODS[name]


def method_names() -> tuple[str, ...]:
    return tuple(METHODS)


def default_lr(name: str) -> float | None:
    """The default step size of a registered method (None for a name that is not a trainer)."""
    return METHODS[name].default_lr if name in METHODS else None


def method_options(name: str) -> tuple[str, ...] | None:
    """Option keys of a registered method (None for a name that is not a trainer)."""
    return METHODS[name].options if name in METHODS else None


# The builders import their kernels when a trainer is built, so that naming the methods (the
# command line, the results' option strings) does not load numba.
def _sparse_kernels(cfg: Any) -> Any:
    from subquad.model.kernels import get_kernels  # noqa: PLC0415
    from subquad.model.subquadratic import SparseKernels  # noqa: PLC0415

    return SparseKernels(get_kernels(cfg.backend), cfg.update, cfg.rank_spec(),
                         cfg.forward_kernel)


def _dense_kernels(cfg: Any) -> Any:  # noqa: ARG001 - every builder takes the config
    from subquad.model.dense import DenseKernels  # noqa: PLC0415

    return DenseKernels()


#: full-batch gradient descent, Gauss-Newton with a dense rank-n update, the paper's method
register(Method("dense-gd", _dense_kernels, 1e-3, ("gradient",)))
register(Method("dense-gn", _dense_kernels, 1.0, ("cholesky",)))
register(Method("subquad", _sparse_kernels, 1.0, SOLVERS, sparse=True))
