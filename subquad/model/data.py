"""Seeded training data: synthetic unit-norm inputs (well spread or clustered) and the data
sets that scikit-learn ships inside its package (no download).

Every input x_i is normalised to unit norm (ALGORITHM.md assumes ||x_i|| = 1). The real sets:

| name | d | samples | labels y_i |
|---|---|---|---|
| ``digits`` | 64 | 360 | digit 1 -> +1, digit 0 -> -1 (classes 0 and 1 only) |
| ``breast-cancer`` | 30 | 569 | benign -> +1, malignant -> -1 |
| ``wine`` | 13 | 178 | cultivar 0 -> +1, cultivars 1 and 2 -> -1 |
| ``iris`` | 4 | 150 | versicolor -> +1, setosa and virginica -> -1 (not linearly separable) |
| ``diabetes`` | 10 | 442 | disease progression after one year, standardised (regression) |

digits keeps its raw pixel intensities (one scale); the others have features on very different
scales (e.g. tumour area in the hundreds next to smoothness near 0.1), so each feature is
standardised over the whole set before the rows are normalised. A run takes n samples drawn
without replacement with the seed.

``clustered`` is a synthetic option that makes the Gram matrix K ill-conditioned (for the
solver experiment): the n inputs are near-duplicates of k = ceil(n / CLUSTER_SIZE) centres,
x_i = normalise(centre + CLUSTER_SPREAD g / sqrt(d)), with teacher or sign labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from subquad.errors import ConfigError, check_choice
from subquad.model.network import finite_check

LABELS = ("teacher", "signs")
#: teacher network width for synthetic labels
TEACHER_WIDTH = 64
#: clustered data: samples per cluster and the spread of a sample around its centre
CLUSTER_SIZE = 4
CLUSTER_SPREAD = 0.01


@dataclass(frozen=True)
class RealSet:
    """One bundled scikit-learn data set: its loader, dimension and labelling."""

    loader: str          # name of the sklearn.datasets function
    d: int
    positive: int | None  # class labelled +1 (the rest -1); None = regression target
    standardise: bool    # z-score every feature before the unit-norm rows
    n_class: int | None = None  # load_digits(n_class=...)


REAL_SETS: dict[str, RealSet] = {
    "digits": RealSet("load_digits", 64, 1, False, n_class=2),
    "breast-cancer": RealSet("load_breast_cancer", 30, 1, True),
    "wine": RealSet("load_wine", 13, 0, True),
    "iris": RealSet("load_iris", 4, 1, True),
    "diabetes": RealSet("load_diabetes", 10, None, True),
}
SYNTHETIC_SETS = ("synthetic", "clustered")
DATASETS = SYNTHETIC_SETS + tuple(REAL_SETS)
#: d when none is given for synthetic data
DEFAULT_D = 16


def fixed_dimension(name: str) -> int | None:
    """The feature count a real data set imposes on d, or None (synthetic: any d)."""
    spec = REAL_SETS.get(name)
    return spec.d if spec else None


def default_d(name: str) -> int:
    """d when the user gives none: the set's own dimension, else DEFAULT_D."""
    return fixed_dimension(name) or DEFAULT_D


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ConfigError("data", "a sample has zero norm and cannot be normalised to unit norm")
    return X / norms


def _teacher_labels(X: np.ndarray) -> np.ndarray:
    """y_i from a fixed random ReLU teacher (one per d), standardised to unit variance."""
    d = X.shape[1]
    teacher = np.random.default_rng(0x7EAC)
    W = teacher.standard_normal((TEACHER_WIDTH, d))
    a = teacher.standard_normal(TEACHER_WIDTH) / np.sqrt(TEACHER_WIDTH)
    y = np.maximum(X @ W.T, 0) @ a
    return (y - y.mean()) / (y.std() + 1e-12) if X.shape[0] > 1 else np.sign(y) + (y == 0)


def _labels(rng: np.random.Generator, X: np.ndarray, labels: str) -> np.ndarray:
    """y_i by ``labels`` (checked by the caller before anything is drawn)."""
    if labels == "signs":
        return rng.choice(np.array([-1.0, 1.0]), size=X.shape[0])
    return _teacher_labels(X)


def synthetic(n: int, d: int, seed: int, labels: str = "teacher") -> tuple[np.ndarray, np.ndarray]:
    """x_i uniform on the unit sphere; y_i from a fixed random ReLU teacher (unit variance) or
    random signs."""
    check_choice("labels", labels, LABELS)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7A]))
    X = _unit_rows(rng.standard_normal((n, d)))
    return X, _labels(rng, X, labels)


def clustered(n: int, d: int, seed: int, labels: str = "teacher"
              ) -> tuple[np.ndarray, np.ndarray]:
    """Near-duplicate inputs: ceil(n / CLUSTER_SIZE) random unit centres, each sample its
    centre plus Gaussian noise of norm about CLUSTER_SPREAD, renormalised. Nearby inputs give
    nearly equal rows of the Jacobian, so K = J J^T has small eigenvalues (ill-conditioned)."""
    check_choice("labels", labels, LABELS)
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xC1C5]))
    k = math.ceil(n / CLUSTER_SIZE)
    centres = _unit_rows(rng.standard_normal((k, d)))
    owner = np.arange(n) % k
    noise = rng.standard_normal((n, d)) * (CLUSTER_SPREAD / np.sqrt(d))
    X = _unit_rows(centres[owner] + noise)
    return X, _labels(rng, X, labels)


def _sklearn_loader(name: str) -> Callable:
    try:
        import sklearn.datasets as skd  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - scikit-learn is a runtime dependency
        raise ConfigError("data", f"{name!r} needs scikit-learn (pip install scikit-learn)"
                          ) from exc
    return getattr(skd, REAL_SETS[name].loader)


def real(name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n samples of a bundled scikit-learn set (see the module table), unit-norm rows."""
    spec = REAL_SETS[name]
    load_fn = _sklearn_loader(name)
    ds = load_fn(n_class=spec.n_class) if spec.n_class else load_fn()
    data = np.asarray(ds.data, dtype=np.float64)
    target = np.asarray(ds.target)
    total = data.shape[0]
    if not 1 <= n <= total:
        raise ConfigError("n", f"{name} has {total} samples; n must be in [1, {total}], got {n}")
    if spec.standardise:
        data = (data - data.mean(axis=0)) / data.std(axis=0)
    y_all = ((target - target.mean()) / target.std() if spec.positive is None
             else np.where(target == spec.positive, 1.0, -1.0))
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD161]))
    idx = np.sort(rng.choice(total, size=n, replace=False))
    return _unit_rows(data[idx]), y_all[idx].astype(np.float64)


def check_dimension(name: str, d: int) -> None:
    """A real set fixes d: reject any other value, naming the accepted one."""
    fixed = fixed_dimension(name)
    if fixed is not None and d != fixed:
        raise ConfigError("d", f"{name} has d = {fixed} features; pass --d {fixed} (got {d})")


def load(name: str, n: int, d: int, seed: int, labels: str = "teacher"
         ) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the dataset name; checks d and that the data are finite."""
    check_choice("data", name, DATASETS)
    if name in REAL_SETS:
        check_dimension(name, d)
        X, y = real(name, n, seed)
    else:
        X, y = (synthetic if name == "synthetic" else clustered)(n, d, seed, labels)
    check_data(X, y)
    return X, y


def check_data(X: np.ndarray, y: np.ndarray) -> None:
    """Reject non-finite or misshapen data early (the network needs unit-norm finite x)."""
    finite_check("X", X)
    finite_check("y", y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ConfigError("X", f"expected X of shape (n, d) and y of shape (n,), got {X.shape} "
                          f"and {y.shape}")
