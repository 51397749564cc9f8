"""Executors: one local process per cell (submitit) equals in-process; a killed worker is resumed;
Slurm without submitit fails clearly; the Slurm path submits an array with the [executor] table.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pandas as pd
import pytest

from subquad.errors import ConfigError
from subquad.harness.sweep import run_sweep
from subquad.results.cells import read_cell
from tests.experiment_text import grid

ROOT = Path(__file__).resolve().parents[1]

try:
    import submitit  # noqa: F401

    HAVE_SUBMITIT = True
except ImportError:
    HAVE_SUBMITIT = False
needs_submitit = pytest.mark.skipif(
    not HAVE_SUBMITIT, reason="submitit is not installed (pip install 'subquad[cluster]')")

#: dense-gd decreases the loss slowly and deterministically: losses comparable across processes
CONFIG = """
name = "exec"
dtype = "float64"

[[methods]]
method = "dense-gd"
lr = 0.001

[[methods]]
method = "dense-gn"
""" + grid("{values}").replace("min_sample_seconds = 0", "iters = 2\nmin_sample_seconds = {mss}")


def config(tmp_path: Path, values: str = "64, 128", mss: float = 0, extra: str = "") -> Path:
    path = tmp_path / "exp.toml"
    path.write_text(CONFIG.format(values=values, mss=mss) + extra)
    return path


def _comparable(out: Path) -> pd.DataFrame:
    runs = pd.read_csv(out / "runs.csv")
    return runs.sort_values(["cell", "sample", "phase"])[
        ["cell", "method", "m", "sample", "phase", "work", "bytes", "loss", "status"]
    ].reset_index(drop=True)


@needs_submitit
def test_local_processes_equals_local(tmp_path: Path) -> None:
    path = config(tmp_path)
    a = _comparable(run_sweep(path, tmp_path / "local", progress=False))
    b = _comparable(run_sweep(path, tmp_path / "procs", executor="local-processes",
                              progress=False))
    assert set(a["status"]) == {"ok"}
    pd.testing.assert_frame_equal(a.drop(columns="loss"), b.drop(columns="loss"))
    pd.testing.assert_series_equal(a["loss"], b["loss"], rtol=1e-9, atol=1e-12)


def _children_running(marker: str) -> list[int]:
    """Pids of live processes whose command line contains ``marker`` (our run folder)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "submitit.core._submit" in cmd and marker in cmd:
            pids.append(int(d.name))
    return pids


@needs_submitit
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to find the worker")
def test_killed_worker_then_resume_runs_only_missing_cells(tmp_path: Path) -> None:
    path = config(tmp_path, values="64, 96, 128", mss=0.3)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    driver = subprocess.Popen([sys.executable, "-m", "subquad", "sweep", str(path), "--out",
                               str(out), "--executor", "local-processes", "--quiet"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    killed = None
    try:
        deadline = time.time() + 120
        finished_workers: set[int] = set()
        while time.time() < deadline and driver.poll() is None and killed is None:
            if not list((out / "cells").glob("*.csv")):
                finished_workers = set(_children_running(str(out)))
            else:  # a later cell's worker (the first one may be writing its file right now)
                fresh = [p for p in _children_running(str(out)) if p not in finished_workers]
                if fresh:  # killed at whatever point it has reached: every one is valid
                    os.kill(fresh[0], signal.SIGKILL)
                    killed = fresh[0]
            time.sleep(0.05)
        assert killed is not None, "no worker found to kill"
        assert driver.wait(timeout=120) == 0
    finally:
        if driver.poll() is None:
            driver.kill()
    runs = pd.read_csv(out / "runs.csv", dtype={"message": str}, keep_default_na=False)
    lost = runs[runs["message"].str.startswith("worker lost")]
    assert lost["cell"].nunique() == 1
    ok_before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.csv")
                 if read_cell(p)["cell"].iloc[0] not in set(lost["cell"])}
    run_sweep(path, out, resume=True, executor="local-processes", progress=False)
    runs = pd.read_csv(out / "runs.csv")
    assert runs["cell"].nunique() == 6 and set(runs["status"]) == {"ok"}
    assert not runs.duplicated(["cell", "sample", "phase"]).any()
    after = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.csv")}
    assert all(after[k] == v for k, v in ok_before.items())


@pytest.mark.parametrize("kind", ["slurm", "local-processes"])
def test_without_submitit_is_a_clear_config_error(tmp_path: Path, monkeypatch, kind) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit -> ImportError
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        run_sweep(config(tmp_path), out, executor=kind, progress=False)
    assert err.value.param == "executor"
    assert "pip install 'subquad[cluster]'" in str(err.value)
    assert not out.exists()


@needs_submitit
def test_slurm_without_a_cluster_is_a_clear_config_error(tmp_path: Path, monkeypatch) -> None:
    import subquad.harness.executors as executors

    monkeypatch.setattr(executors, "slurm_available", lambda: False)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="sbatch"):
        run_sweep(config(tmp_path), out, executor="slurm", progress=False)
    assert not out.exists()


class _FakeJob:
    def __init__(self, fn, args, job_id, folder):
        self.value = fn(*args)
        self.job_id = job_id
        folder.mkdir(parents=True, exist_ok=True)
        result = folder / f"{job_id}_result.pkl"
        result.write_bytes(b"")  # the executor waits for this file
        self.paths = types.SimpleNamespace(result_pickle=result, stderr=folder / "err")

    def done(self) -> bool:
        return True

    def result(self):
        return self.value


class _FakeAutoExecutor:
    """Stands in for submitit.AutoExecutor: runs the array in process, records parameters."""

    seen: dict = {}

    def __init__(self, folder, cluster=None):
        type(self).seen = {"folder": str(folder), "cluster": cluster}
        self.folder = Path(folder).parent

    def update_parameters(self, **params):
        type(self).seen["params"] = params

    def map_array(self, fn, *iterables):
        return [_FakeJob(fn, args, f"7_{i}", self.folder / f"7_{i}")
                for i, args in enumerate(zip(*iterables))]


def test_slurm_array_uses_executor_table(tmp_path: Path, monkeypatch) -> None:
    import subquad.harness.executors as executors

    fake = types.ModuleType("submitit")
    fake.AutoExecutor = _FakeAutoExecutor
    monkeypatch.setitem(sys.modules, "submitit", fake)
    monkeypatch.setattr(executors, "slurm_available", lambda: True)
    extra = ('\n[executor]\nkind = "slurm"\npartition = "gpu"\ntime = "00:20:00"\n'
             "gpus_per_task = 1\narray_parallelism = 4\nexclusive = true\n")
    out = run_sweep(config(tmp_path, extra=extra), tmp_path / "out", progress=False,
                    executor_options={"partition": "big"})
    seen = _FakeAutoExecutor.seen
    assert seen["cluster"] == "slurm"
    p = seen["params"]
    assert p["slurm_partition"] == "big" and p["timeout_min"] == 20
    assert p["slurm_gpus_per_task"] == 1 and p["slurm_array_parallelism"] == 4
    assert p["slurm_exclusive"] is True
    runs = pd.read_csv(out / "runs.csv")
    assert runs["cell"].nunique() == 4 and set(runs["status"]) == {"ok"}


class _SilentJob(_FakeJob):
    """A task whose result never appears (it is still queued when the controller dies)."""

    def __init__(self, fn, args, job_id, folder):
        folder.mkdir(parents=True, exist_ok=True)
        self.job_id = job_id
        self.paths = types.SimpleNamespace(result_pickle=folder / "never.pkl",
                                           stderr=folder / "err")


class _SilentAutoExecutor(_FakeAutoExecutor):
    def map_array(self, fn, *iterables):
        return [_SilentJob(fn, args, f"8_{i}", self.folder / f"8_{i}")
                for i, args in enumerate(zip(*iterables))]


def test_slurm_controller_gone_ends_the_sweep_with_lost_cells(tmp_path: Path,
                                                              monkeypatch) -> None:
    """squeue never answers: after CONTROLLER_SILENCE_SECONDS every pending cell is recorded
    as lost (a retryable outcome), instead of a sweep that waits forever."""
    import subquad.harness.executors as executors

    fake = types.ModuleType("submitit")
    fake.AutoExecutor = _SilentAutoExecutor
    monkeypatch.setitem(sys.modules, "submitit", fake)
    monkeypatch.setattr(executors, "slurm_available", lambda: True)
    monkeypatch.setattr(executors, "queue_states", lambda arrays: None)
    monkeypatch.setattr(executors, "accounting_off", lambda arrays: None)
    monkeypatch.setattr(executors, "CONTROLLER_SILENCE_SECONDS", 0.0)
    extra = '\n[executor]\nkind = "slurm"\npartition = "debug"\n'
    out = run_sweep(config(tmp_path, extra=extra), tmp_path / "out", progress=False)
    runs = pd.read_csv(out / "runs.csv", keep_default_na=False)
    assert runs["cell"].nunique() == 4 and set(runs["status"]) == {"error"}
    assert runs["message"].str.contains("worker lost: the Slurm controller did not").all()
