"""The paper's trainer: sparse forward/backward/Gram from the active sets, three update modes.

Forward finds all m pre-activations of a layer from the s-sparse h_{l-1} (O(m s) per sample),
backward reads only the |S_{i,l+1}| x |S_{i,l}| block of W_{l+1}, the Gram matrix costs
O(L n^2 s), and the update is a sparse scatter, a row-dense update, the lazy low-rank
structure W = W0 + U V^T whose fold is a BLAS GEMM (its own phase), or ``fused``: kept pending
and applied by the next forward while it streams the rows (CPU only; kernels/fused.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from subquad.errors import ConfigError, check_choice
from subquad.model.network import Network
from subquad.model.sparse import SparseRows, row_ids
from subquad.model.trainer import CACHE_LINE, Work, lines_touched

UPDATES = ("auto", "scatter", "rowdense", "lazy", "fused")
#: backends whose arrays the fused update-in-forward kernel (numba, host memory) can update
FUSED_BACKENDS = ("numpy", "reference")
FORWARD_KERNELS = ("auto", "per-example", "input-major")
#: forward kernels each backend offers (the GPU adds cuSPARSE SpMM)
FORWARD_KERNELS_BY_BACKEND = {"numpy": FORWARD_KERNELS, "cupy": (*FORWARD_KERNELS, "spmm")}
#: CPU_KERNELS.md: row-dense wins from s/m >= 0.05; below, the row-ownership scatter (measured
#: 2-4x faster than row-dense at s/m = 0.024-0.034 on this machine, n = 16)
AUTO_DENSITY_SPLIT = 0.05
#: auto picks ``fused`` over ``scatter`` once one W_l is at least this large, i.e. twice a
#: 32 MiB L3 (results/fused-kernels, AMD EPYC VM, float32, per iteration fused / scatter:
#: n = 16, 1 thread 1.26 / 1.00 / 0.82 / 0.73 / 0.57 at m = 1024 / 2048 / 2896 / 4096 / 8192,
#: 2 threads 1.12 / 1.03 / 0.90 / 0.82 / 0.68; n = 64 0.53-0.90 from m = 2048). Conservative:
#: fused already wins at m = 2896; an earlier run measured it 2.2x slower there at 2 threads)
AUTO_FUSED_MIN_W_BYTES = 64 * 2**20


def choose_update(update: str, q: float, backend: str = "numpy", w_bytes: float = 0.0) -> str:
    """Resolve ``auto`` by the expected density s/m = Q(beta) (CPU_KERNELS.md measurements)
    and, on the CPU, the size of one weight matrix ``w_bytes`` (fused from
    AUTO_FUSED_MIN_W_BYTES on, where streaming W dominates).

    ``fused`` exists on the CPU only: asking for it on another backend is a ConfigError.
    """
    check_choice("update", update, UPDATES)
    if update == "fused" and backend not in FUSED_BACKENDS:
        raise ConfigError("update", f"'fused' is CPU-only (backend numpy); backend {backend!r} "
                          "accepts: auto, scatter, rowdense, lazy")
    if update != "auto":
        return update
    if q > AUTO_DENSITY_SPLIT:
        return "rowdense"
    if backend in FUSED_BACKENDS and w_bytes >= AUTO_FUSED_MIN_W_BYTES:
        return "fused"
    return "scatter"


@dataclass
class SparseState:
    """Sparse activations of one forward pass: H[l] holds S_{i,l} and h_{i,l} for l = 0..L."""

    H: list
    norms: list
    f: Any
    #: fused mode, L >= 2: (dots, P) from the top layer's forward, the backward's u_{L-1} for
    #: the guessed supports P (kernels/fused.py ``top_backward`` corrects it to H[L])
    top: Any = None


class SparseKernels:
    """Kernels of the subquadratic trainer on one backend's kernel module."""

    name = "subquad"

    def __init__(self, kern: Any, update: str = "auto", rank_max: Any = None,
                 forward_kernel: str = "auto"):
        check_choice("forward-kernel", forward_kernel,
                     getattr(kern, "FORWARD_KERNELS", FORWARD_KERNELS), noun="kernel")
        self.kern = kern
        self.update_req = update
        self.rank_max_req = rank_max
        self.forward_kernel = forward_kernel
        self.lazy: list = []
        self.pending: list = []
        self.folds = 0
        self.last_forward: dict = {}
        self.top_guess: Any = None

    def setup(self, net: Network, H0: Any) -> None:
        self.net = net
        self.xp = net.xp
        sp = net.spec
        self.mode = choose_update(self.update_req, sp.q, sp.backend,
                                  float(sp.m) * sp.m * sp.itemsize)
        self.pending = [None] * sp.L
        self.H0 = SparseRows.from_dense(H0, self.xp)
        self.norm0 = self.H0.row_norms(self.xp)
        self.coef = net.dtype.type(sp.beta * sp.s_w)
        if self.mode == "lazy":
            from subquad.model.lowrank import LazyLowRank, parse_rank_max  # noqa: PLC0415

            self.rank_max = parse_rank_max(self.rank_max_req if self.rank_max_req is not None
                                           else "m^0.5", sp.m, sp.n)
            self.lazy = [LazyLowRank(Wt, self.rank_max, xp=self.xp) for Wt in net.Wt]

    # -- helpers ----------------------------------------------------------------------------

    def _W0t(self, l: int) -> Any:
        """W_l^T, or the base W0_l^T of the lazy structure (l = 1..L)."""
        return self.lazy[l - 1].W0t if self.lazy else self.net.Wt[l - 1]

    # -- phases -----------------------------------------------------------------------------

    def forward(self) -> tuple[SparseState, Work]:
        """h_l = sigma(W_l h_{l-1} - b_l) from the s-sparse h_{l-1}: m nnz(h_{l-1}) madds."""
        net, xp = self.net, self.xp
        H, norms = [self.H0], [self.norm0]
        madds = nbytes = 0.0
        m = net.spec.m
        self.last_forward = {}
        top = None
        for l in range(1, net.spec.L + 1):
            b = net.threshold(norms[-1])
            extra = None
            if self.lazy:
                extra = self.lazy[l - 1].forward_extra(H[-1])
                madds += self.lazy[l - 1].forward_work(H[-1].nnz, H[-1].n)
            kw = {} if self.forward_kernel == "auto" else {"forward_kernel": self.forward_kernel}
            if self.mode == "fused":
                out, info = self._forward_fused(l, H[-1], b, kw)
                madds += info["update_madds"] + info.get("dot_madds", 0.0)
                if "dots" in info:
                    top = (info["dots"], info["guess"])
            else:
                out, info = self.kern.forward_layer(self._W0t(l), H[-1], b, extra, **kw)
            madds += float(m) * H[-1].nnz
            nbytes += float(info["bytes"])
            self.last_forward[l] = info.get("kernel", "")
            H.append(out)
            norms.append(out.row_norms(xp))
        HL = H[-1]
        if top is not None:
            self.top_guess = HL
        f = HL.with_values(self.net.a[HL.indices] * HL.values).row_sums(xp)
        # whole rows of W_l^T (m elements each) are read: every byte is a line byte; the
        # working set is the L weight matrices the pass sweeps
        L = net.spec.L
        ws = float(L) * m * m * net.spec.itemsize
        return SparseState(H, norms, f, top), Work(madds + HL.nnz, nbytes, nbytes, ws, "stream",
                                                   calls=6.0 * L + 3)

    def _forward_fused(self, l: int, Hin: SparseRows, b: Any, kw: dict) -> tuple:
        """Layer l's forward that first applies (and clears) the pending update of W_l.

        On the top layer (L >= 2) it also computes the backward's dots with a[P] while the rows
        are in cache, P the last forward's output supports (few neurons flip per step; the
        backward corrects the flips). ``info["guess"]`` is that P.
        """
        from subquad.model.kernels.fused import forward_fused  # noqa: PLC0415

        pending, self.pending[l - 1] = self.pending[l - 1], None
        L = self.net.spec.L
        if l < L or L < 2:
            return forward_fused(self.net.Wt[l - 1], Hin, b, pending, **kw)
        P = self.top_guess
        if P is None or P.n != Hin.n:
            P = SparseRows(np.zeros(Hin.n + 1, np.int64), np.zeros(0, np.int64),
                           np.zeros(0, self.net.dtype), self.net.spec.m)
        out, info = forward_fused(self.net.Wt[l - 1], Hin, b, pending,
                                  predict=(P, self.net.a), **kw)
        info["guess"] = P
        return out, info

    def outputs(self, st: SparseState) -> Any:
        return st.f

    def backward(self, st: SparseState) -> tuple[list, Work]:
        """v_L = D_L a; u_l = W_{l+1}[S_{l+1}, S_l]^T v_{l+1} (- adaptive rank-one term).

        ``fused``: u_{L-1} comes from the forward's dots, corrected for the flipped neurons.
        """
        net, xp = self.net, self.xp
        L = net.spec.L
        isz = float(net.spec.itemsize)
        V = [None] * (L + 1)
        HL = st.H[L]
        V[L] = HL.with_values(net.a[HL.indices].astype(net.dtype))
        madds = nbytes = lines = 0.0
        for l in range(L - 1, 0, -1):
            Hl, Vn = st.H[l], V[l + 1]
            if l == L - 1 and st.top is not None:
                # the forward's dots with the guessed supports; only flipped columns are read
                from subquad.model.kernels.fused import top_backward  # noqa: PLC0415

                u, flips = top_backward(net.Wt[l], Hl, st.top[0], st.top[1], Vn, net.a)
                reads = float((Hl.counts() * flips).sum())
                madds += reads
                nbytes += reads * isz
                lines += reads * CACHE_LINE
            else:
                u = self.kern.backward_block(self._W0t(l + 1), Hl, Vn)
                block = float(self._block_size(Hl, Vn))
                madds += block
                nbytes += block * isz
                lines += self._block_lines(Hl, Vn)
            if self.lazy:
                u = u + self.lazy[l].backward_extra(Hl, Vn)
                madds += self.lazy[l].backward_work(Hl.nnz, Vn.nnz)
            if net.spec.threshold == "adaptive":
                safe = xp.where(st.norms[l] > 0, st.norms[l], 1)
                scale = self.coef * Vn.row_sums(xp) / safe
                u = u - scale[row_ids(Hl, xp)] * Hl.values
                madds += 2.0 * Hl.nnz + Vn.nnz
            V[l] = Hl.with_values(u.astype(net.dtype))
        m = float(net.spec.m)
        return V, Work(madds, nbytes, lines, (L - 1) * m * m * isz, "random",
                       calls=8.0 * (L - 1) + 2)

    def _block_size(self, A: SparseRows, B: SparseRows) -> float:
        """sum_i |S_{i,a}| |S_{i,b}|: the entries of every sample's active block."""
        return float((A.counts() * B.counts()).sum())

    def _block_lines(self, A: SparseRows, B: SparseRows) -> float:
        """Cache-line bytes of every sample's block: |S_{i,a}| rows of W^T, each hitting
        ``lines_touched(|S_{i,b}|)`` lines of a row of m_out elements (sorted columns)."""
        row_bytes = float(B.m) * self.net.spec.itemsize
        hits = lines_touched(B.counts(), row_bytes)
        return float((A.counts().astype(float) * hits).sum()) * CACHE_LINE

    def gram(self, st: SparseState, V: list) -> tuple[Any, Work]:
        """K = sum_l (H_{l-1} H_{l-1}^T) o (V_l V_l^T) from sparse rows: O(L n^2 s)."""
        K = None
        madds = 0.0
        n = self.net.spec.n
        for l in range(1, self.net.spec.L + 1):
            term = self.kern.gram(st.H[l - 1]) * self.kern.gram(V[l])
            madds += float(n) * (st.H[l - 1].nnz + V[l].nnz) + n * n
            K = term if K is None else K + term
        return K, Work(madds, 0.0, calls=3.0 * self.net.spec.L)

    def sketch_inputs(self, st: SparseState, V: list) -> tuple[list, list]:
        return st.H[:-1], V[1:]  # h_{l-1} and v_l for l = 1..L

    def fold(self, n_new: int) -> Work:
        """Lazy only: fold U V^T into W0 (m x r x m GEMM) when the next update would pass r_max."""
        if not self.lazy or not self.lazy[0].needs_fold(n_new):
            return Work()
        madds = nbytes = 0.0
        isz = float(self.net.spec.itemsize)
        for lr in self.lazy:
            nbytes += lr.fold_bytes(isz)  # before the fold resets the rank
            madds += lr.fold()
        self.folds += 1
        m, L = self.net.spec.m, self.net.spec.L
        return Work(madds, nbytes, nbytes, float(L) * m * m * isz, "gemm",
                    f"{m}x{self.rank_max}x{m}", 2.0 * L)

    def fold_period(self, n_new: int) -> int:
        """Iterations between two folds of the lazy structure (1 without it).

        A timing sample that spans a multiple of this amortises the fold exactly.
        """
        return max(1, self.rank_max // n_new) if self.lazy else 1

    def update(self, st: SparseState, V: list, coef: Any) -> Work:
        """W_l += sum_i coef_i v_{i,l} h_{i,l-1}^T by the chosen mode.

        ``fused`` only records (H_{l-1}, V_l, coef) here and counts nothing: the next forward
        applies it and its phase is charged with the update's multiply-adds (the pending
        block) and bytes (entries in rows the forward does not read; the others are in cache).
        Every other reader of W runs after that forward.
        """
        net = self.net
        isz = float(net.spec.itemsize)
        madds = nbytes = lines = 0.0
        for l in range(1, net.spec.L + 1):
            Hin, Vout = st.H[l - 1], V[l]
            block = self._block_size(Hin, Vout)
            if self.mode == "fused":
                self.pending[l - 1] = (Hin, Vout, coef)
            elif self.mode == "lazy":
                self.lazy[l - 1].append(Hin, Vout, coef)
                madds += float(Hin.n) * (Hin.m + Vout.m)
            elif self.mode == "scatter":
                self.kern.update_scatter(net.Wt[l - 1], Hin, Vout, coef)
                madds += block
                nbytes += block * isz
                lines += self._block_lines(Hin, Vout)
            else:
                # one axpy of a whole row of length m_out per active entry of h_{i,l-1}
                self.kern.update_rowdense(net.Wt[l - 1], Hin, Vout, coef)
                madds += float(Hin.nnz) * Vout.m
                nbytes += self._union_rows(Hin) * Vout.m * isz
        m, L = float(net.spec.m), net.spec.L
        ws = L * m * m * isz
        if self.mode == "lazy":  # appends n columns to U and V: in cache
            return Work(madds, 0.0, 0.0, 2.0 * L * m * self.rank_max * isz, "compute",
                        calls=4.0 * L)
        if self.mode == "scatter":  # isolated read-modify-writes: one line each
            return Work(madds, nbytes, lines, ws, "random", calls=2.0 * L)
        if self.mode == "fused":  # bookkeeping only: the forward streams and updates the rows
            return Work(0.0, 0.0, 0.0, 0.0, "compute", calls=float(L))
        return Work(madds, nbytes, nbytes, ws, "stream", calls=2.0 * L)

    def _union_rows(self, R: SparseRows) -> float:
        """|union_i S_i|: distinct rows touched (a bincount, no sort)."""
        xp = self.xp
        return float(xp.count_nonzero(xp.bincount(R.indices, minlength=R.m)))

    def active_counts(self, st: SparseState) -> list[np.ndarray]:
        return [np.asarray(H.counts()) for H in st.H]

    def flips(self, old: SparseState, new: SparseState) -> list[int]:
        """Neurons whose on/off state changed, summed over samples, per layer."""
        xp = self.xp
        out = []
        for a, b in zip(old.H, new.H):
            ka = row_ids(a, xp) * a.m + a.indices
            kb = row_ids(b, xp) * b.m + b.indices
            common = xp.intersect1d(ka, kb, assume_unique=True).shape[0]
            out.append(int(a.nnz + b.nnz - 2 * int(common)))
        return out

    def describe(self) -> dict:
        d = {"update": self.mode, "forward_kernel": self.forward_kernel}
        if self.lazy:
            d.update(rank_max=self.rank_max, folds=self.folds)
        if self.last_forward:
            d["forward_kernel_used"] = sorted(set(self.last_forward.values()))
        return d
