"""Seeded training data: synthetic unit-norm inputs with teacher or sign labels, and digits.

The digits set is scikit-learn's bundled ``load_digits`` (no download): classes 0 and 1 as
labels -1 and +1, features normalised to unit norm, subsampled to n with the seed.
"""

from __future__ import annotations

import numpy as np

from subquad.errors import ConfigError
from subquad.model.network import finite_check

DATASETS = ("synthetic", "digits")
LABELS = ("teacher", "signs")
DIGITS_D = 64
#: teacher network width for synthetic labels
TEACHER_WIDTH = 64


def _unit_rows(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ConfigError("data", "a sample has zero norm and cannot be normalised to unit norm")
    return X / norms


def synthetic(n: int, d: int, seed: int, labels: str = "teacher") -> tuple[np.ndarray, np.ndarray]:
    """x_i uniform on the unit sphere; y_i from a fixed random ReLU teacher (unit variance) or
    random signs."""
    if labels not in LABELS:
        raise ConfigError("labels", f"unknown labels {labels!r}; accepted: {', '.join(LABELS)}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xDA7A]))
    X = _unit_rows(rng.standard_normal((n, d)))
    if labels == "signs":
        y = rng.choice(np.array([-1.0, 1.0]), size=n)
    else:
        teacher = np.random.default_rng(0x7EAC)  # one fixed teacher per d
        W = teacher.standard_normal((TEACHER_WIDTH, d))
        a = teacher.standard_normal(TEACHER_WIDTH) / np.sqrt(TEACHER_WIDTH)
        y = np.maximum(X @ W.T, 0) @ a
        y = (y - y.mean()) / (y.std() + 1e-12) if n > 1 else np.sign(y) + (y == 0)
    return X, y


def digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n samples of digits 0 (label -1) and 1 (label +1), unit-norm 64-pixel features."""
    try:
        from sklearn.datasets import load_digits  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - scikit-learn is a runtime dependency
        raise ConfigError("data", "'digits' needs scikit-learn (pip install scikit-learn)") from exc
    ds = load_digits(n_class=2)
    total = ds.data.shape[0]
    if n > total:
        raise ConfigError("n", f"digits (classes 0/1) has {total} samples; n must be in "
                          f"[1, {total}], got {n}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0xD161]))
    idx = np.sort(rng.choice(total, size=n, replace=False))
    X = _unit_rows(ds.data[idx].astype(np.float64))
    y = np.where(ds.target[idx] == 1, 1.0, -1.0)
    return X, y


def load(name: str, n: int, d: int, seed: int, labels: str = "teacher"
         ) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch on the dataset name; checks that the data are finite."""
    if name == "synthetic":
        X, y = synthetic(n, d, seed, labels)
    elif name == "digits":
        if d != DIGITS_D:
            raise ConfigError("d", f"digits has d = {DIGITS_D} features; pass --d {DIGITS_D} "
                              f"(got {d})")
        X, y = digits(n, seed)
    else:
        raise ConfigError("data", f"unknown data {name!r}; accepted: {', '.join(DATASETS)}")
    check_data(X, y)
    return X, y


def check_data(X: np.ndarray, y: np.ndarray) -> None:
    """Reject non-finite or misshapen data early (the network needs unit-norm finite x)."""
    finite_check("X", X)
    finite_check("y", y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ConfigError("X", f"expected X of shape (n, d) and y of shape (n,), got {X.shape} "
                          f"and {y.shape}")
