"""The per-phase machine model t_p = o_p + W_p / F_p + B_p / BW(S_p) (docs/MACHINE_MODEL.md).

``Machine`` turns one calibration (``subquad calibrate``) into the constants: per-call
overhead o, compute rates F (GEMM of a shape, in-cache loop) and the bandwidth BW(S) a phase's
bytes see at its working set S. The access kind a trainer records per phase says which term
carries its cost:

- ``stream``: whole rows of W^T (length m) read at the row-gather bandwidth, scaled to the
  working set by the streaming curve: ``B / BW_gather(m, S)``;
- ``random``: isolated elements of s sorted columns in s rows, each moving a 64-byte line:
  ``line bytes / BW_rows(S)`` (read for the backward, read-modify-write for the update);
- ``gemm``: ``W / F_gemm(shape)``, the rate calibrated on that GEMM shape (it already pays its
  own memory traffic, so no byte term is added);
- ``compute``: ``W / F_loop``, operands in cache.

Predict mode uses these constants alone; fit mode multiplies each (method, phase) by one
efficiency factor fitted in log space (``fit_factors``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from subquad.errors import ConfigError
from subquad.harness.environment import fingerprint_digest

RMW_PHASES = ("update",)


def _interp_log(x: float, xs: list[float], ys: list[float]) -> float:
    """Linear interpolation of log y over log x, clamped to the end values."""
    if not xs:
        return math.nan
    lx = np.log(np.asarray(xs, dtype=float))
    ly = np.log(np.asarray(ys, dtype=float))
    order = np.argsort(lx)
    return float(np.exp(np.interp(math.log(max(x, 1e-300)), lx[order], ly[order])))


def parse_shape(shape: str) -> tuple[int, int, int]:
    """"a x b x c" -> (a, b, c); ConfigError naming the shape otherwise."""
    try:
        a, b, c = (int(v) for v in str(shape).split("x"))
    except ValueError:
        raise ConfigError("shape", f"a GEMM shape is 'AxBxC' with integers, got {shape!r}"
                          ) from None
    return a, b, c


def _form(a: int, b: int, c: int) -> tuple[str, int, int]:
    """(form, small dimension, width) of a GEMM: nmm (n x m x m), mkm (m x k x m), nmn."""
    if b == c and a <= b:
        return "nmm", a, b
    if a == c and b <= a:
        return "mkm", b, a
    return "nmn", a, b


@dataclass
class Machine:
    """One machine's calibration, evaluated: every constant the model uses."""

    cal: dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.cal.get("machine", ""))

    @property
    def caches(self) -> list[dict]:
        return sorted(self.cal.get("caches") or [], key=lambda c: c["level"])

    @property
    def last_cache(self) -> float:
        """Bytes of the last cache level (inf when unknown: then nothing is 'beyond' it)."""
        return float(self.caches[-1]["size"]) if self.caches else math.inf

    @property
    def memory_size(self) -> float:
        """A working set served by memory: 4x the last cache, at least the largest probe."""
        top = max(self.cal.get("stream", {}).get("size") or [0])
        return max(4 * self.last_cache if self.caches else 0.0, float(top))

    def level(self, working_set: float) -> str:
        """The memory level serving a working set: the first cache it fits, else memory."""
        for c in self.caches:
            if working_set <= c["size"]:
                return f"L{c['level']}"
        return "HBM" if self.cal.get("backend") == "cupy" else "DRAM"

    def stream_bw(self, size: float) -> float:
        s = self.cal["stream"]
        return _interp_log(size, s["size"], s["bandwidth"])

    def gather_bw(self, row_length: float, size: float) -> float:
        """Row-gather bandwidth for rows of ``row_length`` over a working set ``size``.

        Each probed row length is evaluated at ``size`` (log-log between its own working
        sets; beyond them scaled by the streaming curve), then interpolated in row length.
        """
        by_len: dict[float, list[tuple[float, float]]] = {}
        for g in self.cal.get("gather") or []:
            by_len.setdefault(float(g["row_length"]), []).append(
                (float(g["working_set"]), float(g["bandwidth"])))
        if not by_len:
            return self.stream_bw(size)
        lens = sorted(by_len)
        return _interp_log(row_length, lens, [self._gather_at(sorted(by_len[r]), size)
                                              for r in lens])

    def _gather_at(self, probes: list[tuple[float, float]], size: float) -> float:
        """One row length's gather bandwidth at ``size`` from its (working set, bandwidth)
        probes: interpolated between them, scaled by the streaming curve outside them."""
        ws = [p[0] for p in probes]
        if size < ws[0] or size > ws[-1]:
            edge = probes[0] if size < ws[0] else probes[-1]
            return edge[1] * self.stream_bw(size) / self.stream_bw(edge[0])
        return _interp_log(size, ws, [p[1] for p in probes])

    def random_bw(self, size: float, rmw: bool) -> float:
        """Cache-line bandwidth of the sorted-rows pattern at a working set ``size``."""
        r = self.cal["random_rows"]
        key = "rmw_line_bandwidth" if rmw else "read_line_bandwidth"
        return _interp_log(size, r["size"], r[key])

    def gemm_rate(self, shape: str) -> float:
        """Multiply-adds per second of a GEMM shape, interpolated over (small dim, width)."""
        form, k, m = _form(*parse_shape(shape))
        pts: dict[int, list[tuple[int, float]]] = {}
        for g in self.cal.get("gemm") or []:
            f, gk, gm = _form(*parse_shape(g["shape"]))
            if f == form:
                pts.setdefault(gk, []).append((gm, g["rate"]))
        if not pts:
            return math.nan
        ks = sorted(pts)
        at_k = [_interp_log(m, [p[0] for p in sorted(pts[v])], [p[1] for p in sorted(pts[v])])
                for v in ks]
        return _interp_log(k, ks, at_k)

    @property
    def call_overhead(self) -> float:
        o = self.cal.get("overhead") or {}
        return float(max(o.get("numpy_op", 0.0), o.get("numba_call", 0.0)))

    def phase_seconds(self, phase: str, access: str, work: float, nbytes: float,
                      line_bytes: float, working_set: float, shape: str, calls: float,
                      m: float, asymptotic: bool = False, accum_bytes: float = 0.0,
                      accum_set: float = 0.0) -> float:
        """Predicted seconds of one phase (predict mode: calibration constants only).

        ``asymptotic`` evaluates every working set beyond the last cache level.
        ``accum_bytes``: accumulator traffic on top of the weights' bytes (the input-major
        forward adds each row into its readers' tiles), at the streaming bandwidth of the
        accumulators' working set ``accum_set``.
        """
        S = max(working_set, self.memory_size) if asymptotic else working_set
        t = (calls or 0.0) * self.call_overhead
        if accum_bytes > 0:
            t += accum_bytes / self.stream_bw(accum_set)
        if phase == "solve" and "solve_seconds" in self.cal and access == "compute":
            # a direct solve: the calibrated call of the n = 16 solver carries its overhead
            t = max(t, float(self.cal["solve_seconds"]))
        if phase == "gram" and access == "compute" and "gram_rate" in self.cal:
            return t + work / float(self.cal["gram_rate"])
        if access == "stream" and nbytes > 0:
            t += nbytes / self.gather_bw(m, S)
        elif access == "random" and line_bytes > 0:
            t += line_bytes / self.random_bw(S, phase in RMW_PHASES)
        elif access == "gemm" and work > 0 and shape:
            t += work / self.gemm_rate(shape)
        elif work > 0:
            t += work / float(self.cal["loop_rate"])
        return t


def load_calibration(path: str | Path, machine: str | None = None, arg: str = "--calibration"
                     ) -> Machine:
    """One machine of a calibration.json; ``machine`` picks it (default: the only one) by id,
    or by fingerprint digest an entry stored under an old id (it then answers to ``machine``)."""
    p = Path(path)
    if p.is_dir():
        p = p / "calibration.json"
    if not p.is_file():
        raise ConfigError(arg, f"no calibration at {p}; run `subquad calibrate --out DIR` "
                          "(or a sweep with [calibration] probes = true)")
    try:
        machines = json.loads(p.read_text())["machines"]
        missing = sorted({"stream", "random_rows", "loop_rate"}
                         - set().union(*(cal.keys() for cal in machines.values())))
    except (OSError, ValueError) as exc:  # unreadable, not JSON
        raise ConfigError(arg, f"{p} is not a calibration file: {exc}") from None
    except (KeyError, TypeError, AttributeError):
        missing = ["object 'machines' of machine objects"]
    if missing or not machines:
        raise ConfigError(arg, f"{p} is not a calibration file (`subquad calibrate` writes "
                          f"one): no {', '.join(missing) or 'machines'}")
    if machine is not None and machine in machines:
        return Machine(machines[machine])
    for cal in machines.values() if machine else ():
        if machine.endswith(f"-{fingerprint_digest(cal)}"):
            return Machine({**cal, "machine": machine})
    if len(machines) == 1:
        return Machine(next(iter(machines.values())))
    ids = ", ".join(sorted(machines)) or "none"
    raise ConfigError(arg, f"{p} holds machines {ids}; none is {machine!r}")


def fit_factor(measured: np.ndarray, predicted: np.ndarray, n_boot: int = 1000,
               seed: int = 0, confidence: float = 0.95) -> tuple[float, float, float]:
    """Efficiency factor e (measured ~ e x predicted) fitted in log space, with its interval.

    e = exp(mean log(measured / predicted)) is the least-squares fit of log t = log e +
    log t_pred and is positive by construction; the interval is a percentile bootstrap over
    cells. NaN when no cell has both values positive.
    """
    meas, pred = np.asarray(measured, float), np.asarray(predicted, float)
    use = np.isfinite(meas) & np.isfinite(pred) & (meas > 0) & (pred > 0)
    lr = np.log(meas[use] / pred[use])
    if lr.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    boot = lr[rng.integers(0, lr.size, (n_boot, lr.size))].mean(axis=1)
    a = (1 - confidence) / 2
    lo, hi = np.quantile(boot, [a, 1 - a])
    return float(np.exp(lr.mean())), float(np.exp(lo)), float(np.exp(hi))


def slope(m: np.ndarray, t: np.ndarray) -> float:
    """Least-squares exponent of t over m in log-log (NaN with fewer than 2 positive points)."""
    m, t = np.asarray(m, float), np.asarray(t, float)
    use = (m > 0) & (t > 0) & np.isfinite(t)
    if use.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(m[use]), np.log(t[use]), 1)[0])
