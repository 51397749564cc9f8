"""Degree-2 tensor sketches of the Jacobian's Kronecker rows h_{i,l-1} (x) v_{i,l} (ALGORITHM.md 3).

Both sketches work on the sparse factors and never form h (x) v (up to s^2 entries). Stacking
the per-layer sketches of sample i gives column i of B (L k x n) with E[B^T B] = K, where
K = sum_l (H_{l-1} H_{l-1}^T) o (V_l V_l^T). B feeds the preconditioner of ``subquad.model.cg``.

* TensorSketch (Pham-Pagh): CountSketch h with (hash1, sign1) and v with (hash2, sign2) into k
  buckets, then circular convolution by FFT. It equals the CountSketch of h (x) v with the bucket
  (hash1[a] + hash2[b]) mod k and the sign sign1[a] sign2[b] of entry (a, b).
* TensorSRHT (Ahle et al.): signs D1, D2 on the factors, Hadamard transforms of sizes
  m1' = 2^ceil(log2 m_in) and m2' = 2^ceil(log2 m_out), and k sampled coordinate pairs (p_t, q_t)
  drawn uniformly with replacement. With the normalised transform Ht = H / sqrt(m'),

      B_t = sqrt(m1' m2' / k) (Ht1 D1 h)_{p_t} (Ht2 D2 v)_{q_t}
          = (H1 D1 h)_{p_t} (H2 D2 v)_{q_t} / sqrt(k)             (H unnormalised, entries +-1)

  Averaging over a uniform pair, E[B_t B'_t] = (1/k) <Ht1 D1 h, Ht1 D1 h'> <Ht2 D2 v, Ht2 D2 v'>
  = <h, h'> <v, v'> / k because Ht D is orthogonal; summing the k rows gives E[B^T B] = K
  exactly, for every draw of the signs. Only the k needed coordinates are computed:
  (H D x)_p = sum_{j in S} (-1)^popcount(p & j) D_j x_j, O(k s) per row.

Hash and sign draws come from numpy's generator on the host (``draw_sketch``), seeded per
layer, so both backends get the same sketch for a seed.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from subquad.errors import ConfigError, check_choice
from subquad.model.sparse import SparseRows, row_ids, weighted_row_sums

SKETCHES = ("tensorsketch", "tensorsrht")

# nnz x k elements per chunk of samples in the TensorSRHT coordinate computation (bounds memory).
_SRHT_CHUNK = 1 << 20
# A real FFT of length k costs about this many multiply-adds per k log2 k.
_FFT_MADDS = 2.0


class CountSketchDraw(NamedTuple):
    """One layer's TensorSketch hashes: buckets in [0, k) and signs +-1 of each factor."""

    hash1: np.ndarray  # (m_in,) int64, for h_{i,l-1}
    sign1: np.ndarray  # (m_in,) float64
    hash2: np.ndarray  # (m_out,) int64, for v_{i,l}
    sign2: np.ndarray  # (m_out,) float64


class SRHTDraw(NamedTuple):
    """One layer's TensorSRHT draw: signs D1, D2 and k sampled Hadamard coordinates (p_t, q_t)."""

    sign1: np.ndarray  # (m_in,) float64, D1
    sign2: np.ndarray  # (m_out,) float64, D2
    p: np.ndarray  # (k,) int64 in [0, m1')
    q: np.ndarray  # (k,) int64 in [0, m2')
    m1p: int  # m1' = next power of two >= m_in
    m2p: int  # m2' = next power of two >= m_out


def next_pow2(m: int) -> int:
    """The smallest power of two >= m (the Hadamard size m')."""
    return 1 << max(int(m) - 1, 0).bit_length()


def _signs(rng: np.random.Generator, m: int) -> np.ndarray:
    return rng.integers(0, 2, size=m).astype(np.float64) * 2.0 - 1.0


def _draw_layer(kind: str, m_in: int, m_out: int, k: int,
                rng: np.random.Generator) -> CountSketchDraw | SRHTDraw:
    if kind == "tensorsketch":
        return CountSketchDraw(rng.integers(0, k, size=m_in), _signs(rng, m_in),
                               rng.integers(0, k, size=m_out), _signs(rng, m_out))
    m1p, m2p = next_pow2(m_in), next_pow2(m_out)
    return SRHTDraw(_signs(rng, m_in), _signs(rng, m_out), rng.integers(0, m1p, size=k),
                    rng.integers(0, m2p, size=k), m1p, m2p)


def draw_sketch(kind: str, dims: list[tuple[int, int]], k: int,
                seed: int) -> list[CountSketchDraw | SRHTDraw]:
    """Host draws of ``kind`` for layers with factor widths dims[l-1] = (m_in, m_out).

    Layer l uses its own child of SeedSequence(seed), so layers are independent and a layer's
    draw does not depend on L.
    """
    check_choice("sketch", kind, SKETCHES)
    children = np.random.SeedSequence(seed).spawn(len(dims))
    return [_draw_layer(kind, int(a), int(b), int(k), np.random.default_rng(ss))
            for (a, b), ss in zip(dims, children, strict=True)]


def _check_inputs(H_list: list[SparseRows], V_list: list[SparseRows], k: int) -> int:
    """Validate the factor lists and k; return n."""
    if len(H_list) != len(V_list) or not H_list:
        raise ValueError("H_list and V_list must hold one SparseRows per layer, equally many")
    if int(k) < 1:
        raise ConfigError("sketch-size", f"must be a positive integer, got {k}")
    n = H_list[0].n
    if any(X.n != n for X in (*H_list, *V_list)):
        raise ValueError("every factor must have the same number of rows n")
    return n


def countsketch_rows(X: SparseRows, hash_: Any, sign: Any, k: int, xp: Any = np) -> Any:
    """CountSketch of every row of X into k buckets (n x k), O(nnz)."""
    flat = row_ids(X, xp) * k + hash_[X.indices]
    out = xp.bincount(flat, weights=sign[X.indices] * X.values, minlength=X.n * k)
    return out.reshape(X.n, k).astype(X.values.dtype, copy=False)


def _tensorsketch_layer(H: SparseRows, V: SparseRows, draw: CountSketchDraw, k: int,
                        xp: Any) -> Any:
    """TS(h_i (x) v_i) for all i (n x k): circular convolution of the two CountSketches."""
    dt = H.values.dtype
    ch = countsketch_rows(H, xp.asarray(draw.hash1), xp.asarray(draw.sign1, dtype=dt), k, xp)
    cv = countsketch_rows(V, xp.asarray(draw.hash2), xp.asarray(draw.sign2, dtype=dt), k, xp)
    prod = xp.fft.rfft(ch, axis=1) * xp.fft.rfft(cv, axis=1)
    return xp.fft.irfft(prod, n=k, axis=1).astype(dt, copy=False)


def _parity_table(bits: int) -> np.ndarray:
    """(-1)^popcount(b) for b in [0, 2^bits), bits <= 32."""
    b = np.arange(1 << bits, dtype=np.int64)
    for shift in (16, 8, 4, 2, 1):
        b ^= b >> shift
    return 1.0 - 2.0 * (b & 1)


_PARITY16 = _parity_table(16)


def _hadamard_signs(idx: Any, p: Any, table: Any) -> Any:
    """(-1)^popcount(idx_e & p_t) as a (len(idx) x len(p)) array, by a 2^16-entry table.

    Indices below 2^16 (uint16) index the table directly; wider ones (int64, below 2^32) are
    folded to 16 bits first (the parity of a word is that of the xor of its halves).
    """
    a = idx[:, None] & p[None, :]
    if a.dtype != np.uint16:
        a ^= a >> 16
        a &= 0xFFFF
    return table[a]


def _row_chunks(indptr_host: np.ndarray, k: int) -> list[tuple[int, int]]:
    """Consecutive sample ranges [i0, i1) whose nnz x k stays near _SRHT_CHUNK."""
    chunks, i0, n = [], 0, len(indptr_host) - 1
    per = max(_SRHT_CHUNK // max(k, 1), 1)
    while i0 < n:
        limit = indptr_host[i0] + per
        i1 = max(int(np.searchsorted(indptr_host, limit, side="right")) - 1, i0 + 1)
        chunks.append((i0, min(i1, n)))
        i0 = min(i1, n)
    return chunks


def hadamard_coords(X: SparseRows, sign: Any, p: Any, xp: Any = np) -> Any:
    """(H D x_i)_{p_t} for all rows i and sampled coordinates p_t (n x k), H unnormalised.

    O(k s) per row; rows are processed in chunks (a loop over samples, not over m).
    """
    dt = X.values.dtype
    table = xp.asarray(_PARITY16, dtype=dt)
    itype = np.uint16 if X.m <= 1 << 16 else np.int64
    p = p.astype(itype)
    ip = X.indptr.get() if hasattr(X.indptr, "get") else np.asarray(X.indptr)
    out = xp.zeros((X.n, int(p.shape[0])), dtype=dt)
    for i0, i1 in _row_chunks(ip, int(p.shape[0])):
        a, b = int(ip[i0]), int(ip[i1])
        if a == b:
            continue
        idx = X.indices[a:b]
        Y = _hadamard_signs(idx.astype(itype), p, table)
        out[i0:i1] = weighted_row_sums(X.indptr[i0:i1 + 1] - a, sign[idx] * X.values[a:b], Y, xp)
    return out


def _srht_layer(H: SparseRows, V: SparseRows, draw: SRHTDraw, k: int, xp: Any) -> Any:
    """TensorSRHT(h_i (x) v_i) for all i (n x k), scaled so that E[B^T B] = K."""
    if max(draw.m1p, draw.m2p) > 1 << 32:
        raise ConfigError("sketch", "TensorSRHT supports widths up to 2^32")
    dt = H.values.dtype
    ah = hadamard_coords(H, xp.asarray(draw.sign1, dtype=dt), xp.asarray(draw.p), xp)
    av = hadamard_coords(V, xp.asarray(draw.sign2, dtype=dt), xp.asarray(draw.q), xp)
    return ah * av * dt.type(1.0 / math.sqrt(k))


def _stack(kind: str, H_list: list[SparseRows], V_list: list[SparseRows], k: int, seed: int,
           xp: Any) -> Any:
    """B (L k x n): rows l k .. (l+1) k - 1 hold the ``kind`` sketch of h_{i,l-1} (x) v_{i,l}."""
    n = _check_inputs(H_list, V_list, k)
    dims = [(H.m, V.m) for H, V in zip(H_list, V_list, strict=True)]
    draws = draw_sketch(kind, dims, k, seed)
    layer = _tensorsketch_layer if kind == "tensorsketch" else _srht_layer
    B = xp.empty((len(H_list) * k, n), dtype=H_list[0].values.dtype)
    for l, (H, V, d) in enumerate(zip(H_list, V_list, draws, strict=True)):
        B[l * k:(l + 1) * k] = layer(H, V, d, k, xp).T
    return B


def tensorsketch(H_list: list[SparseRows], V_list: list[SparseRows], k: int, seed: int,
                 xp: Any = np) -> Any:
    """B (L k x n): rows l k .. (l+1) k - 1 hold TensorSketch(h_{i,l-1} (x) v_{i,l}) of sample i."""
    return _stack("tensorsketch", H_list, V_list, k, seed, xp)


def tensorsrht(H_list: list[SparseRows], V_list: list[SparseRows], k: int, seed: int,
               xp: Any = np) -> Any:
    """B (L k x n): rows l k .. (l+1) k - 1 hold TensorSRHT(h_{i,l-1} (x) v_{i,l}) of sample i."""
    return _stack("tensorsrht", H_list, V_list, k, seed, xp)


def sketch(kind: str, H_list: list[SparseRows], V_list: list[SparseRows], k: int, seed: int,
           xp: Any = np) -> Any:
    """B (L k x n) of the named sketch ('tensorsketch' or 'tensorsrht')."""
    check_choice("sketch", kind, SKETCHES)
    return _stack(kind, H_list, V_list, k, seed, xp)


def sketch_work(kind: str, nnz_h: float, nnz_v: float, k: int, n: int, L: int) -> float:
    """Multiply-adds of building B; nnz_h, nnz_v are the stored entries summed over all layers.

    TensorSketch: one per stored entry (CountSketch), then per row and layer two forward and one
    inverse real FFT of length k (about 2 k log2 k each) and the k/2 + 1 complex products (2 k).
    TensorSRHT: k per stored entry (the k sampled Hadamard coordinates), then 2 k per row and
    layer (the product of the two coordinates and the scale).
    """
    check_choice("sketch", kind, SKETCHES)
    k, rows = float(k), float(n) * L
    if kind == "tensorsketch":
        fft = 3.0 * _FFT_MADDS * k * math.log2(max(k, 2.0))
        return float(nnz_h + nnz_v) + rows * (fft + 2.0 * k)
    return float(nnz_h + nnz_v) * k + rows * 2.0 * k


def default_sketch_size(n: int) -> int:
    """Buckets k = 8 n per layer, so B has L k = 8 L n rows.

    Measured (m = 1024, L = 2, tol 1e-10, 3 networks x 10 sketch seeds, both sketches alike):
    worst-case CG iterations at n = 8 / 16 / 64 are 8 / 16 / 19 with k = 8 n, 8 / 16 / 24 with
    k = 4 n and 8 / 17 / 33 with k = 2 n. Iterations depend on L k / n, so k proportional to n
    keeps them constant as n grows.
    """
    return 8 * max(int(n), 1)
