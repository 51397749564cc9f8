"""The Slurm executor against a real one-node Slurm cluster (fixture ``slurm_cluster``).

Same cells, counted work and losses as the local executor; a task cancelled with scancel is
recorded and ``--resume`` submits only the missing cell; ``exclusive = true`` keeps cells from
overlapping on the node (checked on the cells' ``started``/``ended`` times, with a
non-exclusive control that does overlap); a killed submitter's tasks are collected by
``--merge``; the log carries one line about accounting instead of a warning per poll.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from subquad import cli
from subquad.harness.executors import ENDED_STATES, queue_states
from subquad.harness.sweep import run_sweep
from subquad.results.cells import read_cell
from tests import slurm_cluster as local_cluster
from tests.test_executors import _comparable, config

pytestmark = pytest.mark.slurm

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "experiments" / "smoke.toml"


def slurm_table(exclusive: bool) -> str:
    """An [executor] table for the local cluster's partition."""
    return ('\n[executor]\nkind = "slurm"\npartition = "debug"\n'
            f"exclusive = {str(exclusive).lower()}\n")


def sweep_process(args: list[str]) -> subprocess.Popen:
    """``subquad sweep ARGS`` in a child process, output (stdout and stderr) to a pipe."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "subquad", "sweep", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(what: str, check: Callable[[], object], timeout: float = 120.0) -> object:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def tasks_of(out: Path) -> dict[str, list[str]]:
    """{job id: its task ids} of the jobs submitted into ``out``: submitit's task folders that
    hold the task's pickled call (written after sbatch returned). One cell goes as a plain
    job (task id = job id), more as an array (``<job>_<index>``)."""
    arrays: dict[str, list[str]] = {}
    folder = out / ".submitit"
    for d in folder.iterdir() if folder.is_dir() else []:
        if re.fullmatch(r"\d+(_\d+)?", d.name) and (d / f"{d.name}_submitted.pkl").exists():
            arrays.setdefault(d.name.split("_")[0], []).append(d.name)
    return arrays


def submitted(out: Path, tasks: int) -> Callable[[], dict[str, list[str]] | None]:
    """A check for ``wait_for``: one array of ``tasks`` tasks submitted into ``out``."""

    def check() -> dict[str, list[str]] | None:
        arrays = tasks_of(out)
        return arrays if sorted(len(t) for t in arrays.values()) == [tasks] else None

    return check


def intervals(out: Path) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    cells = pd.read_csv(out / "runs.csv").drop_duplicates("cell")
    assert set(cells["status"]) == {"ok"}
    return sorted(zip(pd.to_datetime(cells["started"]), pd.to_datetime(cells["ended"])))


def overlaps(spans: list[tuple[pd.Timestamp, pd.Timestamp]]) -> bool:
    return any(b[0] < a[1] for a, b in zip(spans, spans[1:]))


def test_smoke_sweep_equals_local_with_a_clean_log(slurm_cluster, tmp_path: Path) -> None:
    # the smoke experiment, non-exclusive so both CPUs of the node work (exclusivity has its
    # own test); cells and their ids do not depend on the executor table
    smoke = tmp_path / "smoke.toml"
    smoke.write_text(SMOKE.read_text() + slurm_table(exclusive=False))
    proc = sweep_process([str(smoke), "--executor", "slurm", "--partition", "debug",
                          "--out", str(tmp_path / "slurm")])
    log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, log
    local = run_sweep(SMOKE, tmp_path / "local", progress=False)
    a, b = _comparable(local), _comparable(tmp_path / "slurm")
    assert a["cell"].nunique() == 12 and set(a["status"]) == {"ok"}
    pd.testing.assert_frame_equal(a.drop(columns="loss"), b.drop(columns="loss"))
    # iterations per sample follow the clock: a loss converged to ~1e-14 may differ in its
    # last digits; every other loss is bitwise equal in practice
    pd.testing.assert_series_equal(a["loss"], b["loss"], rtol=1e-6, atol=1e-10)
    machines = [set(pd.read_csv(d / "runs.csv")["machine"]) for d in (local, tmp_path / "slurm")]
    assert len(machines[0]) == 1 and machines[0] == machines[1]  # one node, one machine id
    # clean log: no sacct warning per poll, one line saying where status comes from
    assert log.count("Bypassing sacct error") <= 1, log
    notes = [line for line in log.splitlines() if "accounting" in line]
    assert len(notes) == 1 and "status comes from the cell files" in notes[0], log


def test_scancel_is_recorded_and_resume_submits_only_that_cell(slurm_cluster,
                                                               tmp_path: Path) -> None:
    # two cells of >= 6 s each (3 samples of >= 2 s): cancelled at its start, task 0 is killed
    # long before it could write its cell file (KillWait is 2 s on the local cluster)
    path = config(tmp_path, values="64", mss=2, extra=slurm_table(exclusive=False))
    path.write_text(path.read_text().replace("samples = 2", "samples = 3"))
    out = tmp_path / "out"
    proc = sweep_process([str(path), "--out", str(out), "--quiet"])
    try:
        (array,) = wait_for("the array", submitted(out, 2))
        task = f"{array}_0"
        wait_for(f"task {task} to run", lambda: (queue_states([array]) or {}).get(task)
                 == "RUNNING")
        subprocess.run(["scancel", task], check=True)
        log, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log
    runs = pd.read_csv(out / "runs.csv", dtype={"message": str}, keep_default_na=False)
    by_cell = runs.drop_duplicates("cell").set_index("cell")
    lost = by_cell[by_cell["status"] != "ok"]
    assert len(by_cell) == 2 and len(lost) == 1, by_cell[["status", "message"]]
    message = lost["message"].iloc[0]
    assert message.startswith("worker lost") and f"task {task} ended CANCELLED" in message
    ok_before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.csv")
                 if read_cell(p)["cell"].iloc[0] not in set(lost.index)}
    assert len(ok_before) == 1
    run_sweep(path, out, resume=True, progress=False)
    arrays = tasks_of(out)
    assert sorted(len(t) for t in arrays.values()) == [1, 2]  # the resume: one task
    runs = pd.read_csv(out / "runs.csv")
    assert runs["cell"].nunique() == 2 and set(runs["status"]) == {"ok"}
    assert not runs.duplicated(["cell", "sample", "phase"]).any()
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.csv")}
    assert all(after[k] == v for k, v in ok_before.items())


def test_exclusive_cells_do_not_overlap(slurm_cluster, tmp_path: Path) -> None:
    # two cells of >= 3 s on a node with 2 CPUs: shared, both run at once (the control shows
    # the check can fail); exclusive, one waits for the other
    spans = {}
    for exclusive in (False, True):
        path = config(tmp_path, values="64", mss=1.5, extra=slurm_table(exclusive))
        out = run_sweep(path, tmp_path / f"exclusive-{exclusive}", progress=False)
        spans[exclusive] = intervals(out)
        assert len(spans[exclusive]) == 2
    assert overlaps(spans[False]), spans[False]
    assert not overlaps(spans[True]), spans[True]


def test_killed_submitter_then_merge_collects_the_tasks(slurm_cluster, tmp_path: Path) -> None:
    path = config(tmp_path, values="64, 128", mss=0.5, extra=slurm_table(exclusive=False))
    out = tmp_path / "out"
    proc = sweep_process([str(path), "--out", str(out), "--quiet"])
    try:
        (array,) = wait_for("the array", submitted(out, 4))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)

    def all_ended() -> bool:
        states = queue_states([array])
        return states is not None and all(s in ENDED_STATES for s in states.values())

    wait_for("the tasks to end", all_ended)
    assert not (out / "runs.csv").exists()  # the submitter died before merging
    assert cli.main(["sweep", "--merge", str(out)]) == 0
    runs = pd.read_csv(out / "runs.csv")
    assert runs["cell"].nunique() == 4 and set(runs["status"]) == {"ok"}


@pytest.mark.parametrize("require, outcome", [("1", pytest.fail.Exception),
                                              ("", pytest.skip.Exception)])
def test_without_root_the_fixture_skips_or_fails(monkeypatch, require, outcome) -> None:
    monkeypatch.setenv("SUBQUAD_REQUIRE_SLURM", require)
    monkeypatch.setattr(local_cluster, "_script",
                        lambda *a: subprocess.CompletedProcess(a, 3, "", ""))  # not running
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(outcome, match="needs root"):
        with local_cluster.cluster():
            pass
