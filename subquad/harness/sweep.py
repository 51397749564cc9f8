"""Run an experiment: every cell once, resumable, budgeted, merged into a tidy runs.csv.

The driver validates the whole file first (nothing runs on a bad config), writes
``environment.json``, then runs the cells in order through an executor. A cell that is censored
(or runs out of memory) stops the larger values of its sweep axis for that method: they are
recorded as censored rows, not dropped. ``--budget`` caps the whole sweep: cells it leaves are
recorded as censored with message "sweep budget" and ``--resume`` runs them later.

The sweep holds the directory's lock (a second writer exits 2 naming it) and binds the
directory to the experiment (``run.json``: another experiment exits 2). A fresh sweep refuses a
directory that already holds results unless told ``--overwrite`` (or ``--resume``); whenever
``runs.csv`` changes, the files derived from the old one (fits, report, figures) are removed,
so nothing in the directory disagrees with ``runs.csv``. Every removal is printed, even with
``--quiet``. Ctrl-C / SIGTERM end the sweep with ``Interrupted`` (cells finished, the command
to resume); a failed write with a ``WriteError`` (the file, the cells kept, that command).
"""

from __future__ import annotations

import shlex
import time
from pathlib import Path

from subquad.errors import ConfigError, Interrupted, Terminated
from subquad.harness.calibrate import run_calibrate
from subquad.harness.config import Cell, Experiment, Timing, expand_cells, load_experiment
from subquad.harness.environment import current_environment, limit_threads, load_average
from subquad.harness.executors import (
    local_runner,
    process_runner,
    resolve_executor,
    run_slurm_array,
)
from subquad.harness.measure import status_rows, warm_kernels, write_cell
from subquad.harness.progress import Progress
from subquad.model.methods import get_method
from subquad.results.cells import (
    IDENTITY_DIGITS,
    bad_cells,
    cell_files,
    cell_path,
    cells_dir,
    clear_cells,
    experiment_of,
    foreign_cells,
    is_final,
    read_cell_status,
    training_of,
)
from subquad.results.rundir import RunDir

#: statuses after which the larger values of the same axis series are not attempted
STOPPING = ("censored", "oom")


class AxisStops:
    """Per series (sweep, method, seed) the first position whose cell was censored."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.first: dict[str, tuple[int, Cell]] = {}

    def record(self, cell: Cell, status: str, message: str) -> None:
        if not self.enabled or status not in STOPPING or message.startswith("sweep budget"):
            return
        for key, pos in cell.chains:
            if key not in self.first or pos < self.first[key][0]:
                self.first[key] = (pos, cell)

    def blocker(self, cell: Cell) -> Cell | None:
        """The smaller censored cell of one of this cell's series, if any."""
        for key, pos in cell.chains:
            hit = self.first.get(key)
            if hit is not None and hit[0] < pos:
                return hit[1]
        return None


def _existing(rd: RunDir, report: Progress | None = None) -> dict[str, tuple[str, str]]:
    """(status, message) of the cells already finished in ``rd`` (final outcomes only).

    A damaged cell file of this experiment is reported (through ``report``) and removed, so
    the cell runs again; files of another experiment are left alone.
    """
    out = {}
    foreign = set(foreign_cells(rd.path, rd.identity()))
    for p in cell_files(rd.path):
        if p in foreign:
            continue
        status, message = read_cell_status(p)
        if message.startswith("corrupt cell file"):
            training = training_of(p)
            if report is not None:
                report.warn(f"{message[len('corrupt cell file: '):]}; removed "
                            f"{p.name}{' and ' + training.name if training.exists() else ''}"
                            ", running the cell again")
            p.unlink(missing_ok=True)
            training.unlink(missing_ok=True)
            continue
        if is_final(status, message):
            out[p.stem] = (status, message)
    return out


def _check_out(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """A fresh sweep must not clobber results."""
    if resume or overwrite or not run_dir.is_dir():
        return
    held = [f"{len(cell_files(run_dir))} cell files"] if cell_files(run_dir) else []
    held += RunDir(run_dir).measured_files()
    if held:
        raise ConfigError("out", f"{run_dir} already holds results ({', '.join(held)}); pass "
                          "--resume to finish that sweep or --overwrite to replace it")


def _prepare(rd: RunDir, exp: Experiment, identity: str, resume: bool, progress: Progress
             ) -> None:
    """Bind the directory to the experiment; a fresh (non-resume) run starts without old
    cells or tables."""
    if resume:
        rd.bind(exp.name, identity)
    cells_dir(rd.path).mkdir(parents=True, exist_ok=True)
    progress.removed(rd.path, clear_cells(rd.path, temporaries=resume),
                     "left by an earlier run")
    if not resume:
        measured = [rd.file(name) for name in rd.measured_files()]
        for p in measured:
            p.unlink(missing_ok=True)
        progress.removed(rd.path, measured, "measured by an earlier run")
        _note_retired(rd, progress)
        (rd / "run.json").unlink(missing_ok=True)
        rd.bind(exp.name, identity)
    rd.write_json("environment.json", current_environment())
    rd.copy_in("experiment.toml", exp.path)


def _note_retired(rd: RunDir, progress: Progress) -> None:
    progress.removed(rd.path, rd.retire_derived(), "derived from an older runs.csv: run "
                     "`subquad fit`, `plot`, `report` again")


def _foreign(rd: RunDir) -> str | None:
    """One line naming the cell files of another experiment, or None."""
    foreign = foreign_cells(rd.path, rd.identity())
    if not foreign:
        return None
    held, f = rd.json("run.json"), foreign[0]
    return (f"{len(foreign)} cell file(s) in {cells_dir(rd.path)} are not of experiment "
            f"{held['experiment']} ({held['identity'][:IDENTITY_DIGITS]}) that the directory "
            f"holds, e.g. {f.name} of experiment {experiment_of(f)} "
            f"({f.name[:IDENTITY_DIGITS]}); left out of runs.csv, not removed")


def _merge(rd: RunDir, progress: Progress, warn_foreign: bool = True) -> tuple[Path, int]:
    """Rebuild runs.csv; report damaged (and foreign) cells; retire derived files if runs.csv
    changed."""
    old = rd.file("runs")
    before = old.read_bytes() if old.is_file() else None
    for message in bad_cells(rd.path):
        progress.warn(f"{message}; left out of runs.csv (`--resume` runs it again)")
    if warn_foreign and (foreign := _foreign(rd)):
        progress.warn(foreign)
    path, n = rd.merge_cells()
    if path.read_bytes() != before:
        _note_retired(rd, progress)
    return path, n


def _compile(cells: list[Cell], done: dict, report: Progress) -> None:
    """Compile the sparse kernels up front, so no cell (and no ETA) pays for it."""
    combos = sorted({(c.backend, c.dtype) for c in cells
                     if not c.is_calibration and get_method(c.method).sparse
                     and c.cell_id not in done})
    for backend, dtype in combos:
        t0 = time.perf_counter()
        try:
            warm_kernels(backend, dtype)
        except Exception as exc:  # the cells themselves will record the failure
            report.note(f"kernel warm-up for {backend}/{dtype} failed: {exc}")
            continue
        report.note(f"compiled {backend} kernels for {dtype} in {time.perf_counter() - t0:.1f} s")


def _skip(run_dir: Path, cell: Cell, machine: str, message: str) -> None:
    write_cell(run_dir, cell, status_rows(cell, machine, "censored", message), [])


def run_sweep(config_path: str | Path, out_dir: str | Path | None = None, resume: bool = False,
              budget: float | None = None, executor: str | None = None,
              progress: bool = True, executor_options: dict | None = None,
              overwrite: bool = False) -> Path:
    """Run every cell of an experiment file into ``out_dir`` (default ``results/<name>``).

    ``executor`` None takes the file's [executor] kind (default ``local``);
    ``executor_options`` overrides its other keys (partition, time, ...). A directory that
    already holds results needs ``resume`` or ``overwrite``. Returns the run dir.
    """
    exp = load_experiment(config_path)
    if budget is not None and not budget > 0:
        raise ConfigError("budget", f"must be a number of seconds > 0, got {budget!r}")
    if resume and overwrite:
        raise ConfigError("overwrite", "give either --resume (keep finished cells) or "
                          "--overwrite (start over), not both")
    ex = resolve_executor(exp.executor, executor, executor_options or {})
    run_dir = Path(out_dir) if out_dir is not None else Path("results") / exp.name
    cells = expand_cells(exp)
    rd = RunDir(run_dir)
    command = ["subquad", "sweep", str(config_path), "--out", str(run_dir)]
    again = shlex.join([*command, "--resume"])
    flag = ["--resume"] if resume else ["--overwrite"] if overwrite else []
    with rd.lock(shlex.join(command + flag)), \
            rd.writing(f"finished cells are kept in {cells_dir(run_dir)}", again):
        _check_out(run_dir, resume, overwrite)
        limit_threads(exp.timing.threads)
        report = Progress(len(cells), exp.timing, enabled=progress)
        _prepare(rd, exp, cells[0].identity, resume, report)
        _run_cells(exp, cells, rd, budget, ex, report, again)
        path, n = _merge(rd, report)
        if env := rd.environment():  # the load average at the run's end beside the one at its start
            rd.write_json("environment.json", {**env, "load_average_end": load_average()})
    report.note(f"merged {n} cells into {path}")
    return run_dir


def _run_cells(exp: Experiment, cells: list[Cell], rd: RunDir, budget: float | None, ex,
               report: Progress, again: str) -> None:
    """The cells not yet done, through the executor; a signal ends it with ``Interrupted``."""
    run_dir = rd.path
    machine = current_environment()["machine"]
    try:
        done = _existing(rd, report)
        report.note(f"sweep {exp.name}: {len(cells)} cells ({len(done)} already done), "
                    f"executor {ex.kind} -> {run_dir}")
        if exp.calibration_probes and ex.kind != "slurm":
            _probes(exp, run_dir, report)
        if ex.kind == "slurm":
            _run_array(exp, cells, done, run_dir, budget, ex, report)
        else:
            runner = (local_runner if ex.kind == "local" else process_runner)(run_dir, exp.timing)
            if ex.kind == "local":
                _compile(cells, done, report)
            stops = AxisStops(exp.timing.stop_axis_after_censored)
            _run_in_order(cells, done, run_dir, budget, runner, stops, report, machine)
    except (KeyboardInterrupt, Terminated) as exc:
        how = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else "SIGTERM"
        raise Interrupted(f"sweep interrupted ({how}): {len(_existing(rd))} of {len(cells)} cells "
                          f"finished in {run_dir}; resume with: {again}",
                          130 if isinstance(exc, KeyboardInterrupt) else 143) from None


def _probes(exp: Experiment, run_dir: Path, report: Progress) -> None:
    """``[calibration] probes = true``: the machine model's probes into calibration.json."""
    grid = sorted({c.m for c in expand_cells(exp)})
    t0 = time.perf_counter()
    path, _ = run_calibrate(run_dir, exp.backend, exp.dtype, exp.timing.threads, m_grid=grid)
    report.note(f"calibration probes in {time.perf_counter() - t0:.0f} s -> {path}")


def _run_in_order(cells: list[Cell], done: dict, run_dir: Path, budget: float | None,
                  runner, stops: AxisStops, report: Progress, machine: str) -> None:
    """One cell at a time: skip finished ones, honour the sweep budget and the axis stops."""
    t0 = time.perf_counter()
    for k, cell in enumerate(cells):
        rest = [c for c in cells[k + 1:] if c.cell_id not in done]
        if cell.cell_id in done:
            status, message = done[cell.cell_id]
            stops.record(cell, status, message)
            report.line(cell, f"{status} (done before)", None, rest)
            continue
        elapsed = time.perf_counter() - t0
        if budget is not None and elapsed >= budget:
            _skip(run_dir, cell, machine, f"sweep budget of {budget:g} s used up")
            report.line(cell, "censored (sweep budget)", None, rest)
            continue
        blocker = stops.blocker(cell)
        if blocker is not None:
            why = f"axis stopped: a smaller cell was censored ({blocker.describe()})"
            _skip(run_dir, cell, machine, why)
            stops.record(cell, "censored", why)
            report.line(cell, "censored (axis stopped)", None, rest)
            continue
        t1 = time.perf_counter()
        status = runner(cell, None if budget is None else budget - elapsed)
        took = time.perf_counter() - t1
        stops.record(cell, status, read_cell_status(cell_path(run_dir, cell.cell_id))[1])
        if status == "ok":
            report.observe(cell, took)
        report.line(cell, status, took, rest)


def _run_array(exp: Experiment, cells: list[Cell], done: dict, run_dir: Path,
               budget: float | None, ex, report: Progress) -> None:
    """Slurm: submit the cells not yet done as one job array and wait for them."""
    todo = [c for c in cells if c.cell_id not in done]
    for cell in cells:
        if cell.cell_id in done:
            report.line(cell, f"{done[cell.cell_id][0]} (done before)", None, [])
    if not todo:
        return
    report.note(f"submitting {len(todo)} cells as a Slurm job array (partition "
                f"{ex.partition or 'default'}); waiting for them to finish")
    for cell, status, _ in run_slurm_array(todo, run_dir, exp.timing, ex, budget, exp.name,
                                           report.note):
        report.line(cell, status, None, [])


def merge_only(run_dir: str | Path) -> tuple[Path, list[str], str | None]:
    """``subquad sweep --merge DIR``: rebuild runs.csv from the sound cell files.

    Returns the runs.csv path, one message per damaged cell file and one line naming the cell
    files of another experiment (all left out of it).
    """
    rd = RunDir(run_dir)
    if not cells_dir(rd.path).is_dir():
        raise ConfigError("merge", f"{run_dir} has no cells/ directory; is it a sweep output?")
    command = f"subquad sweep --merge {run_dir}"
    with rd.lock(command), rd.writing("the cell files are unchanged", command):
        path, _ = _merge(rd, Progress(0, Timing()), warn_foreign=False)
    return path, bad_cells(rd.path), _foreign(rd)
