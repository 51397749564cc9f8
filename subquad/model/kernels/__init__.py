"""Sparse kernels behind one small interface, one module per backend.

Every backend module (``reference`` = pure numpy, ``cpu`` = numba, ``gpu`` = cupy) provides:

- ``forward_layer(Wt, H, b, extra=None) -> (SparseRows, info)``: for each sample i,
  g_i = sum_{j in S_i} H[i, j] Wt[j, :] (+ extra[i, :]), then emits the sorted indices with
  g_i > b_i and the values g_i - b_i (one fused threshold-and-compact step).
  ``info = {"kernel": name, "bytes": weight bytes read}``.
- ``backward_block(Wt, H_in, V_out) -> values``: u_i[j] = sum_{k in S_out,i} Wt[j, k] V_out[i, k]
  for j in S_in,i (the |S_out| x |S_in| block of W), aligned with ``H_in.indices``.
- ``gram(R) -> (n, n)``: R R^T of sparse rows, O(n^2 s).
- ``update_scatter(Wt, H_in, V_out, coef)``: in place, Wt[j, k] += coef_i H_in[i, j] V_out[i, k]
  (each sample's outer product into its s x s block).
- ``update_rowdense(Wt, H_in, V_out, coef)``: the same result, touching only the active rows
  of Wt but whole rows.
"""

from __future__ import annotations

from types import ModuleType

from subquad.errors import ConfigError

KERNEL_BACKENDS = {"numpy": "cpu", "reference": "reference", "cupy": "gpu"}


def get_kernels(backend: str) -> ModuleType:
    """The kernel module for a backend name ('numpy' -> numba CPU kernels, 'cupy' -> GPU)."""
    if backend not in KERNEL_BACKENDS:
        raise ConfigError("backend", f"no kernels for {backend!r}; accepted: "
                          f"{', '.join(KERNEL_BACKENDS)}")
    name = KERNEL_BACKENDS[backend]  # loaded on use; explicit, so tests/test_layers.py sees it
    if name == "cpu":
        from . import cpu as mod  # noqa: PLC0415
    elif name == "gpu":
        from . import gpu as mod  # noqa: PLC0415
    else:
        from . import reference as mod  # noqa: PLC0415
    return mod
