"""Where cells run: this process, one local process per cell, or a Slurm job array (submitit).

Every executor runs the same ``measure.run_cell``, which writes only its own cell file; the
sweep merges the files afterwards. ``local`` and ``local-processes`` run one cell at a time
(timings need an otherwise idle machine); ``slurm`` runs an array of one task per cell on
exclusive nodes, each task recording its own machine id.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

from subquad.errors import ConfigError
from subquad.harness.config import Cell, Executor, Timing
from subquad.harness.environment import current_environment
from subquad.harness.measure import run_cell, status_rows, write_cell
from subquad.results.cells import cell_path, read_cell_status
from subquad.vocabulary import EXECUTOR_KINDS

#: slack on top of a cell's budget before a scheduler kills its task (init, imports, writing)
SLACK_SECONDS = 300
POLL_SECONDS = 0.05


def require_submitit(kind: str) -> ModuleType:
    """Import submitit or fail with a ConfigError naming ``executor`` and the fix."""
    try:
        import submitit  # noqa: PLC0415
    except ImportError as exc:
        raise ConfigError("executor", f"--executor {kind} needs submitit, which is not "
                          "installed; run: pip install 'subquad[cluster]' (accepted without "
                          "it: local)") from exc
    return submitit


def resolve_executor(exp_executor: Executor, kind: str | None, overrides: dict[str, Any]
                     ) -> Executor:
    """The experiment's [executor] table with the CLI's choices (None = keep) on top."""
    if kind is not None and kind not in EXECUTOR_KINDS:
        raise ConfigError("executor", f"unknown executor {kind!r}; accepted: "
                          f"{', '.join(EXECUTOR_KINDS)}")
    changes = {k: v for k, v in overrides.items() if v is not None}
    if kind is not None:
        changes["kind"] = kind
    ex = replace(exp_executor, **changes)
    slurm_only = [k for k in changes if k != "kind"]
    if slurm_only and ex.kind != "slurm":
        raise ConfigError(f"--{slurm_only[0].replace('_', '-')}", f"applies to the slurm "
                          f"executor only, and this sweep runs on {ex.kind!r}; drop it or add "
                          "--executor slurm")
    if ex.kind != "local":
        require_submitit(ex.kind)
    if ex.kind == "slurm" and not slurm_available():
        raise ConfigError("executor", "--executor slurm needs a Slurm cluster, but 'sbatch' "
                          "and 'srun' are not on PATH here; run on a login node, or use "
                          "--executor local / local-processes")
    return ex


def slurm_available() -> bool:
    """Whether this machine can submit Slurm jobs (submitit needs sbatch and srun)."""
    return shutil.which("sbatch") is not None and shutil.which("srun") is not None


def timeout_minutes(timing: Timing, budget_s: float | None) -> int:
    """Minutes a task may run: its cell budget (or what is left of the sweep's) plus slack."""
    limit = min(timing.cell_budget_seconds, math.inf if budget_s is None else budget_s)
    return max(1, math.ceil((limit + SLACK_SECONDS) / 60))


Runner = Callable[[Cell, "float | None"], str]


def local_runner(run_dir: Path, timing: Timing) -> Runner:
    """Run each cell in this process."""
    return lambda cell, budget_s: run_cell(cell, timing, run_dir, budget_s)


def lost(run_dir: Path, cell: Cell, why: str) -> str:
    """Record a cell whose worker died without writing it (``--resume`` runs it again)."""
    if cell_path(run_dir, cell.cell_id).exists():  # it did finish; trust its file
        return read_cell_status(cell_path(run_dir, cell.cell_id))[0]
    rows = status_rows(cell, current_environment()["machine"], "error", f"worker lost: {why}")
    write_cell(run_dir, cell, rows, [])
    return "error"


def process_runner(run_dir: Path, timing: Timing) -> Runner:
    """Run each cell in a fresh local process through submitit's LocalExecutor, one at a time."""
    submitit = require_submitit("local-processes")
    executor = submitit.LocalExecutor(folder=run_dir / ".submitit", max_num_timeout=0)

    def run(cell: Cell, budget_s: float | None) -> str:
        executor.update_parameters(timeout_min=timeout_minutes(timing, budget_s))
        job = executor.submit(run_cell, cell, timing, str(run_dir), budget_s)
        while not job.done():
            time.sleep(POLL_SECONDS)
        return _outcome(job, run_dir, cell)

    return run


def slurm_parameters(ex: Executor, timing: Timing, budget_s: float | None, name: str
                     ) -> dict[str, Any]:
    """``AutoExecutor.update_parameters`` keywords for the [executor] table."""
    params: dict[str, Any] = {
        "name": f"subquad-{name}",
        "timeout_min": ex.time if ex.time is not None else timeout_minutes(timing, budget_s),
        "nodes": 1, "tasks_per_node": 1, "slurm_array_parallelism": ex.array_parallelism}
    optional = {"slurm_partition": ex.partition, "slurm_gpus_per_task": ex.gpus_per_task,
                "cpus_per_task": ex.cpus_per_task, "slurm_account": ex.account,
                "slurm_constraint": ex.constraint,
                "slurm_exclusive": True if ex.exclusive else None,
                "slurm_setup": list(ex.setup) or None}
    return params | {k: v for k, v in optional.items() if v is not None}


#: squeue states in which a task will not run again (any other state: queued or running)
ENDED_STATES = frozenset({"BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED",
                          "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "REVOKED", "TIMEOUT"})
#: a task squeue reports COMPLETED (or no longer lists) may still be writing its result on a
#: shared file system: wait this long for the result before recording the cell as lost
RESULT_GRACE_SECONDS = 30.0
#: squeue silent this long (controller down or unreachable): the cells still pending are
#: recorded as lost, so the sweep ends and ``--resume`` reruns them, instead of waiting forever
CONTROLLER_SILENCE_SECONDS = 600.0


def queue_states(array_ids: Iterable[str]) -> dict[str, str] | None:
    """``{task id: state}`` of the tasks squeue still lists for these job arrays, or None
    when squeue did not answer. Ended tasks stay listed for the cluster's MinJobAge, then go."""
    cmd = ["squeue", "--noheader", "--array", "--states=all", "--format=%i %T",
           "--jobs", ",".join(sorted(array_ids))]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:  # every task purged already, or the controller did not answer
        return {} if "Invalid job id" in proc.stderr else None
    return dict(line.split()[:2] for line in proc.stdout.splitlines() if len(line.split()) > 1)


def accounting_off(array_ids: Iterable[str]) -> str | None:
    """Why ``sacct`` cannot report on these jobs (accounting off or no sacct), or None."""
    cmd = ["sacct", "--noheader", "-X", "--format=State", "--jobs", ",".join(array_ids)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if proc.returncode == 0:
        return None
    return " ".join(proc.stderr.split())[:200] or f"exit status {proc.returncode}"


@contextmanager
def _quiet_sacct() -> Iterator[None]:
    """For one sweep: at most one sacct warning from submitit (it would log one per poll)."""
    seen: list[logging.LogRecord] = []

    def first_sacct_warning(record: logging.LogRecord) -> bool:
        """Lets the first "Bypassing sacct error" warning through, drops the repeats."""
        if "Bypassing sacct error" not in record.getMessage():
            return True
        seen.append(record)
        return len(seen) == 1

    log = logging.getLogger("submitit")
    log.addFilter(first_sacct_warning)
    try:
        yield
    finally:
        log.removeFilter(first_sacct_warning)


def _visible(path: Path) -> bool:
    """Whether ``path`` exists, refreshing a network file system's cached directory first."""
    with contextlib.suppress(OSError):
        path.parent.chmod(path.parent.stat().st_mode)
    return path.exists()


def _outcome(job: Any, run_dir: Path, cell: Cell) -> str:
    """The status a finished task returned, or its cell recorded as lost if it raised (or was
    killed, timed out or crashed: no result pickle)."""
    try:
        return str(job.result())
    except Exception as exc:
        return lost(run_dir, cell, " ".join(f"{type(exc).__name__}: {exc}".split())[:300])


def run_slurm_array(cells: list[Cell], run_dir: Path, timing: Timing, ex: Executor,
                    budget_s: float | None, name: str,
                    note: Callable[[str], None]) -> Iterator[tuple[Cell, str, float]]:
    """Submit one array task per cell and yield (cell, status, seconds since submit) as they end.

    Cells run concurrently on separate nodes, so the axis stop cannot skip larger cells here;
    each task is bounded by its own cell budget and the Slurm time limit instead. A task is
    done when its result file appears; one that squeue shows ended without a result (cancelled,
    timed out, node failure) is recorded as lost from its cell file, so neither ``sacct`` (often
    off) nor submitit's sacct polling decides when the sweep ends. ``note`` prints a line for
    the user (the sweep's progress stream).
    """
    submitit = require_submitit("slurm")
    executor = submitit.AutoExecutor(folder=run_dir / ".submitit" / "%j", cluster="slurm")
    executor.update_parameters(**slurm_parameters(ex, timing, budget_s, name))
    k = len(cells)
    with _quiet_sacct():
        jobs = executor.map_array(run_cell, cells, [timing] * k, [str(run_dir)] * k,
                                  [budget_s] * k)
        arrays = sorted({str(job.job_id).split("_")[0] for job in jobs})
        why = accounting_off(arrays)
        if why is not None:
            note(f"Slurm accounting is off here (sacct: {why}): task status comes from the "
                 "cell files and squeue")
        t0 = time.perf_counter()
        pending = list(zip(jobs, cells))
        ended_at: dict[str, float] = {}
        answered = time.perf_counter()  # when squeue last answered
        while pending:
            waiting = []
            for job, cell in pending:
                if _visible(job.paths.result_pickle):
                    yield cell, _outcome(job, run_dir, cell), time.perf_counter() - t0
                else:
                    waiting.append((job, cell))
            states = queue_states(arrays) if waiting else None
            if states is not None:
                answered = time.perf_counter()
            elif waiting and time.perf_counter() - answered > CONTROLLER_SILENCE_SECONDS:
                for job, cell in waiting:
                    why = (f"the Slurm controller did not answer squeue for "
                           f"{CONTROLLER_SILENCE_SECONDS:.0f} s; task {job.job_id} may still "
                           "run: `subquad sweep --merge` collects it later, `--resume` reruns it")
                    yield cell, lost(run_dir, cell, why), time.perf_counter() - t0
                return
            pending = []
            for job, cell in waiting:
                state = None if states is None else states.get(str(job.job_id), "gone")
                if state is None or state not in ENDED_STATES | {"gone"}:
                    pending.append((job, cell))
                    continue
                first = ended_at.setdefault(str(job.job_id), time.perf_counter())
                if state in ("COMPLETED", "gone") and (
                        time.perf_counter() - first < RESULT_GRACE_SECONDS):
                    pending.append((job, cell))
                    continue
                why = (f"Slurm task {job.job_id} ended {state} without a result "
                       f"(log: {job.paths.stderr})")
                yield cell, lost(run_dir, cell, why), time.perf_counter() - t0
            if pending:
                time.sleep(min(10.0, 0.5 + 0.05 * len(pending)))
