"""Measure one cell and write its file: timed init, warm-up, timing samples, training rows.

``run_cell`` is the unit every executor runs (in process, in a local subprocess or as a Slurm
array task): it never raises for a failure of the cell itself, it records it as a status row.
Timing follows docs MEASUREMENT.md: compilation and warm-up are never timed, a sample spans
enough iterations to last ``min_sample_seconds``, every sample is kept.
"""

from __future__ import annotations

import datetime as _dt
import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numba
import numpy as np

from subquad import signals
from subquad.errors import ConvergenceError, DivergenceError, SingularGramError
from subquad.files import atomic_write_json
from subquad.harness.config import Cell, Timing
from subquad.harness.environment import current_environment, limit_threads
from subquad.model import train as training
from subquad.model.backend import recorded_backend
from subquad.model.kernels import get_kernels
from subquad.model.lowrank import parse_rank_max
from subquad.model.methods import get_method
from subquad.model.subquadratic import choose_update
from subquad.results.cells import (
    RUNS_COLUMNS,
    SOLVER_INFO_COLUMNS,
    TRAINING_COLUMNS,
    atomic_write_csv,
    cell_path,
    training_path,
)
from subquad.results.format import options_string
from subquad.vocabulary import ITERATION_PHASES as PHASES

MESSAGE_LIMIT = 500
#: calibration kernels stream their operands from a pool this large (beyond the caches), so
#: every width sees the same memory bandwidth: cache-resident operands at small m bend the
#: slopes by 0.15-0.3 (axpy about 1.3, gemv about 2.3 measured here) from cache sizes alone
POOL_BYTES = 1 << 27


class Censored(Exception):
    """The cell ran past its budget; what it measured so far is kept."""


def variant_columns(cell: Cell, legacy: bool = False) -> dict[str, Any]:
    """Every column that identifies the cell's variant (docs/DESIGN.md, runs.csv).

    Options as requested (``update``, ``forward_kernel``) and resolved where the cell's sizes
    decide (solver, lr, cg_tol, ``update_resolved``); ``forward_kernel_resolved`` is only
    known after a forward pass and is added by the trainer cell. ``options`` is the canonical
    string of them all (``results.format.options_string``): series are keyed by it.
    ``legacy``: resolve ``auto`` as runs of results schema 1 did (before the fused update).
    """
    out: dict[str, Any] = {"label": cell.label or cell.method,
                           "threshold": cell.option("threshold", cell.threshold)}
    if cell.is_calibration:
        return out | {"options": ""}
    cfg = cell.train_config()
    solver = cfg.resolved_solver()
    out |= {"solver": solver, "lr": cfg.eta, "damping": float(cfg.damping)}
    if solver.startswith("pcg"):
        out |= {"sketch_size": cfg.sketch_size, "cg_tol": cfg.tol}
    if get_method(cell.method).sparse:
        update = cell.option("update", "auto")
        if update == "lazy":
            exp = cell.option("rank_exponent")
            rank_txt = f"m^{exp:g}" if exp is not None else str(cell.option("rank_max", "m^0.5"))
            rank = cfg.rank_spec()
            rank_num: Any = parse_rank_max("m^0.5" if rank is None else rank, cell.m, cell.n)
        else:
            rank_txt, rank_num = "0", 0
        spec = cfg.spec
        w_bytes = 0.0 if legacy else float(spec.m) * spec.m * spec.itemsize
        out |= {"update": update,
                "update_resolved": choose_update(update, spec.q, spec.backend, w_bytes),
                "rank_max": rank_num, "forward_kernel": cfg.forward_kernel}
        opts = options_string({**out, "method": cell.method, "rank_max": rank_txt})
    else:
        out |= {"update": "dense", "update_resolved": "dense"}
        opts = options_string({**out, "method": cell.method})
    return out | {"options": opts}


def cell_columns(cell: Cell, machine: str) -> dict[str, Any]:
    """The cell columns shared by every row of the cell (DESIGN.md, runs.csv)."""
    return {"experiment": cell.experiment, "cell": cell.base_id, "machine": machine,
            "method": cell.method, "backend": recorded_backend(cell.backend),
            "dtype": cell.dtype, "m": cell.m, "n": cell.n, "d": cell.d, "L": cell.L,
            "c": cell.c, "data": cell.data, "seed": cell.seed, **variant_columns(cell)}


def classify(exc: BaseException) -> str:
    """The status of a failed cell (DESIGN.md, runs.csv ``status``)."""
    if isinstance(exc, Censored):
        return "censored"
    if isinstance(exc, (DivergenceError, FloatingPointError)):
        return "nan"
    if isinstance(exc, ConvergenceError):
        return "cg-not-converged"
    if isinstance(exc, (SingularGramError, np.linalg.LinAlgError)):
        return "singular"
    if isinstance(exc, MemoryError) or "OutOfMemory" in type(exc).__name__:
        return "oom"
    return "error"


class _Clock:
    """Wall-clock budget of one cell; ``check`` raises Censored past the deadline."""

    def __init__(self, seconds: float, reason: str):
        self.t0 = time.perf_counter()
        self.seconds, self.reason = seconds, reason

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def check(self, upcoming: float = 0.0, what: str = "") -> None:
        signals.check()  # a signal whose exception a finalizer swallowed
        if self.elapsed() + upcoming > self.seconds:
            raise Censored(f"{self.reason} of {self.seconds:.0f} s exceeded{what}")


_WARM: set[tuple[str, str]] = set()


def warm_kernels(backend: str, dtype: str) -> None:
    """Compile the sparse kernels of a backend once per process, outside any timed phase."""
    if (backend, dtype) in _WARM:
        return
    warm = getattr(get_kernels(backend), "warmup", None)
    if warm is not None:
        warm(np.dtype(dtype))
    _WARM.add((backend, dtype))


# ------------------------------------------------------------------------------- trainers


def _probe_iters(step: Callable[[], float], timing: Timing, clock: _Clock, t_warm: float
                 ) -> tuple[int, float]:
    """Iterations per sample so that a sample lasts >= min_sample_seconds, and the time of one.

    Runs untimed steps until their measured time adds up to ``min_sample_seconds`` (the warm-up
    steps alone misjudge it: the first iterations pay for first-touch allocation). With
    ``min_sample_seconds = 0`` it runs nothing and returns ``timing.iters``: deterministic.
    """
    if timing.min_sample_seconds <= 0 or t_warm >= timing.min_sample_seconds:
        return timing.iters, t_warm
    total, count = 0.0, 0
    while total < timing.min_sample_seconds and count < timing.max_iters:
        total += step()
        count += 1
        clock.check(what=" while sizing samples")
    return min(max(timing.iters, count), timing.max_iters), total / count


def _trainer_cell(cell: Cell, timing: Timing, clock: _Clock, base: dict, rows: list,
                  trows: list) -> None:
    """Init row, optional training rows, warm-up, then ``timing.samples`` samples."""
    tr = training.build_trainer(cell.train_config())
    net = tr.net
    init = {**base, "sample": cell.round, "iters": 1, "phase": "init",
            "seconds": net.init_seconds,
            "work": net.init_work.get("madds"), "bytes": net.init_work.get("bytes")}
    rows.append(init)
    init["loss"] = tr.start()
    init["active_fraction"] = float(np.mean(tr.active_fraction()))
    clock.check(what=" after init")
    if cell.training_iters and cell.round == 0:
        _train(cell, tr, clock, base, trows)
    t_iter = math.inf
    for _ in range(timing.warmup):
        st = tr.step()
        t_iter = min(t_iter, sum(st.seconds.values()))
        clock.check(what=" during warm-up")
    iters, t_iter = _probe_iters(lambda: sum(tr.step().seconds.values()), timing, clock, t_iter)
    # a lazy low-rank structure folds every `period` steps: whole cycles amortise it exactly
    period = tr.kernels.fold_period(net.spec.n) if hasattr(tr.kernels, "fold_period") else 1
    iters = -(-iters // period) * period
    for sample in timing.round_samples(cell.round):
        clock.check(upcoming=iters * t_iter, what=f" after {sample} of {timing.samples} samples")
        total = {q: dict.fromkeys(PHASES, 0.0) for q in ("seconds", "work", "bytes", "line_bytes")}
        cg: list[float] = []
        for _ in range(iters):
            st = tr.step()
            for p in PHASES:
                total["seconds"][p] += st.seconds[p]
                total["work"][p] += st.work[p]
                total["bytes"][p] += st.bytes[p]
                total["line_bytes"][p] += st.model[p]["line_bytes"]
            if "cg_iters" in st.info:
                cg.append(float(st.info["cg_iters"]))
            clock.check(what=f" during sample {sample}")
        shared = {**base, "sample": sample, "iters": iters, "loss": st.loss,
                  "active_fraction": float(np.mean(st.active_fraction)),
                  "cg_iters": float(np.mean(cg)) if cg else None}
        for p in PHASES:  # working set, access, shape and calls of the last step: fixed per cell
            rows.append({**shared, **st.model[p], "phase": p,
                         **{q: by[p] / iters for q, by in total.items()}})
        rows.append({**shared, "phase": "iteration",
                     **{q: sum(by.values()) / iters for q, by in total.items()}})
    resolved = tr.describe()
    for r in rows:  # what actually ran: auto rules decided by this cell's sizes and machine
        r["update_resolved"] = resolved.get("update", r.get("update_resolved", ""))
        r["forward_kernel_resolved"] = "+".join(resolved.get("forward_kernel_used", []))


def _train(cell: Cell, tr: Any, clock: _Clock, base: dict, trows: list) -> None:
    """training.csv rows: iteration 0 (before the first step), then one per step and layer."""
    q = tr.net.spec.q
    meta = {k: base[k] for k in TRAINING_COLUMNS if k in base}

    def emit(t: int, loss: float, fracs: list[float], flips: list[int], info: dict) -> None:
        solver = {k: info.get(k) for k in SOLVER_INFO_COLUMNS}
        for layer, (a, f) in enumerate(zip(fracs, flips)):
            trows.append({**meta, "iteration": t, "loss": loss, "layer": layer,
                          "active_fraction": a, "expected_active_fraction": q, "flips": f,
                          **solver})

    fr = tr.active_fraction()
    emit(0, tr.loss0, fr, [0] * len(fr), {})
    tr.solver.diagnose = True  # cond(K) etc. only in these untimed iterations
    try:
        for t in range(1, cell.training_iters + 1):
            st = tr.step()
            emit(t, st.loss, st.active_fraction, st.flips, st.info)
            clock.check(what=f" during training iteration {t}")
    finally:
        tr.solver.diagnose = False


# ------------------------------------------------------------------------------- calibration


@numba.njit(cache=True, nogil=True)
def _axpy_stream(y, a, X):  # pragma: no cover - compiled
    """y += a x for every row x of X: one O(m) axpy per row, x streamed from memory."""
    for r in range(X.shape[0]):
        for i in range(y.shape[0]):
            y[i] += a * X[r, i]


def _calibration_op(cell: Cell) -> tuple[Callable[[], None], int, float, float]:
    """(call, operations per call, work per op, bytes per op) of a calibration kernel."""
    dt = np.dtype(cell.dtype)
    m = cell.m
    if cell.method == "calib-axpy":
        rows = max(2, POOL_BYTES // (m * dt.itemsize))
        X = np.full((rows, m), 1.0 / m, dt)
        y = np.zeros(m, dt)
        a = dt.type(1e-3)
        _axpy_stream(y, a, X[:1])  # compile (or load from the cache) before timing
        return (lambda: _axpy_stream(y, a, X)), rows, float(m), 2.0 * m * dt.itemsize
    count = max(1, POOL_BYTES // (m * m * dt.itemsize))
    P = np.full((count, m, m), 1.0 / m, dt)
    v = np.full(m, 1.0, dt)
    out = np.empty(m, dt)

    def gemvs() -> None:
        for k in range(count):
            np.dot(P[k], v, out=out)

    return gemvs, count, float(m) ** 2, float(m) ** 2 * dt.itemsize


def _calibration_cell(cell: Cell, timing: Timing, clock: _Clock, base: dict, rows: list
                      ) -> None:
    """Phase ``kernel``: seconds per operation of y += a x (O(m)) or W x (O(m^2))."""
    call, per_call, work, byts = _calibration_op(cell)

    def timed_calls(count: int = 1) -> float:
        t0 = time.perf_counter()
        for _ in range(count):
            call()
        return time.perf_counter() - t0

    t_call = min(timed_calls() for _ in range(timing.warmup))
    calls, t_call = _probe_iters(timed_calls, timing, clock, t_call)
    for sample in timing.round_samples(cell.round):
        clock.check(upcoming=calls * t_call, what=f" after {sample} of {timing.samples} samples")
        ops = calls * per_call
        rows.append({**base, "sample": sample, "iters": ops, "phase": "kernel",
                     "seconds": timed_calls(calls) / ops, "work": work, "bytes": byts})


# ------------------------------------------------------------------------------- one cell


def measure_cell(cell: Cell, timing: Timing, machine: str, budget_s: float | None = None
                 ) -> tuple[list[dict], list[dict], str, str]:
    """Measure a cell; returns (rows, training rows, status, message). Never raises for the cell.

    ``budget_s`` is what is left of the sweep budget; the cell stops at the smaller of it and
    ``timing.cell_budget_seconds`` (status ``censored``, message naming which).
    """
    base = cell_columns(cell, machine)
    rows: list[dict] = []
    trows: list[dict] = []
    status, message = "ok", ""
    started = utc_now()
    try:
        if not cell.is_calibration and get_method(cell.method).sparse:
            warm_kernels(cell.backend, cell.dtype)
        if budget_s is not None and budget_s < timing.cell_budget_seconds:
            clock = _Clock(budget_s, "sweep budget")
        else:
            clock = _Clock(timing.cell_budget_seconds, "cell budget")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if cell.is_calibration:
                _calibration_cell(cell, timing, clock, base, rows)
            else:
                _trainer_cell(cell, timing, clock, base, rows, trows)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # every failure of the cell becomes its status, on one line
        text = str(exc) if isinstance(exc, Censored) else f"{type(exc).__name__}: {exc}"
        status, message = classify(exc), " ".join(text.split())[:MESSAGE_LIMIT]
    rows = rows or status_rows(cell, machine, status, message)
    ended = utc_now()
    for r in rows:
        r["status"], r["message"], r["started"], r["ended"] = status, message, started, ended
    return rows, trows, status, message


def utc_now() -> str:
    """The wall-clock time in UTC, ISO 8601 with microseconds (``started``/``ended`` columns)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def status_rows(cell: Cell, machine: str, status: str, message: str) -> list[dict]:
    """The single row recording a cell that was not run (censored by axis or budget, lost)."""
    base = cell_columns(cell, machine)
    phase = "kernel" if cell.is_calibration else "iteration"
    return [{**base, "sample": 0, "phase": phase, "status": status, "message": message}]


def write_cell(run_dir: Path, cell: Cell, rows: list[dict], trows: list[dict]) -> None:
    """Training rows first, then the cell file (its existence marks the cell as done)."""
    if trows:
        atomic_write_csv(training_path(run_dir, cell.cell_id), trows, TRAINING_COLUMNS)
    atomic_write_csv(cell_path(run_dir, cell.cell_id), rows, RUNS_COLUMNS)


def run_cell(cell: Cell, timing: Timing, run_dir: str | Path, budget_s: float | None = None
             ) -> str:
    """Measure ``cell`` and write ``run_dir/cells/<cell_id>.csv``; returns the status.

    Picklable entry point of every executor; records this process's own machine id and writes
    its environment to ``run_dir/machines/<machine>.json``.
    """
    run_dir = Path(run_dir)
    limit_threads(timing.threads)
    env = current_environment()
    machine = env["machine"]
    mdir = run_dir / "machines"
    mdir.mkdir(parents=True, exist_ok=True)
    if not (mdir / f"{machine}.json").exists():
        atomic_write_json(mdir / f"{machine}.json", env)
    rows, trows, status, _ = measure_cell(cell, timing, machine, budget_s)
    write_cell(run_dir, cell, rows, trows)
    return status
