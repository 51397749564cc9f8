"""Faults a sweep must survive: SIGKILL plus damaged cell files, Ctrl-C / SIGTERM, a full disk.

Smoke-sized cells (m <= 2048, n = 16, one iteration per sample) so the whole file runs in
seconds; ``min_sample_seconds = 0`` makes every column except ``seconds`` deterministic, so a
resumed run can be compared row by row with an uninterrupted one.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from subquad import cli, files
from tests.test_sweep import TINY

ROOT = Path(__file__).resolve().parents[1]

#: test_sweep.py's sweep made slower (n = 16, m up to 2048, 4 samples) so it can be stopped
#: mid-way, with training rows, and deterministic (min_sample_seconds = 0)
FAULT = TINY.replace("[calibration]\nenabled = true\n", "[training]\niterations = 2\n").replace(
    "n = 4", "n = 16").replace("values = [64, 128]", "values = [256, 512, 1024, 2048]").replace(
    "samples = 2", "samples = 4")
#: columns that do not depend on the clock
DETERMINISTIC = ["cell", "method", "m", "sample", "phase", "iters", "work", "bytes", "loss",
                 "status"]


def _exp(tmp: Path, text: str = FAULT) -> Path:
    path = tmp / "fault.toml"
    path.write_text(text)
    return path


def _sweep_process(path: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "subquad", "sweep", str(path), "--out",
                             str(out), "--quiet", *extra], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=_interruptible)


def _interruptible() -> None:
    """A background job inherits an ignored SIGINT; a terminal's Ctrl-C is not ignored."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_cells(proc: subprocess.Popen, out: Path, count: int = 1) -> None:
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "cells").glob("[0-9a-f]*[0-9a-f].csv"))) >= count:
            return
        time.sleep(0.005)
    assert proc.poll() is None, "the sweep finished before it could be stopped"


def _rows(out: Path) -> pd.DataFrame:
    runs = pd.read_csv(out / "runs.csv")[DETERMINISTIC]
    return runs.sort_values(["cell", "sample", "phase"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run."""
    tmp = tmp_path_factory.mktemp("reference")
    assert cli.main(["sweep", str(_exp(tmp)), "--out", str(tmp / "out"), "--quiet"]) == 0
    return tmp / "out"


def test_kill_truncate_garble_then_resume_equals_uninterrupted(tmp_path: Path, reference: Path,
                                                               capsys) -> None:
    path, out = _exp(tmp_path), tmp_path / "out"
    proc = _sweep_process(path, out)
    try:
        _wait_for_cells(proc, out, 3)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    cells = sorted((out / "cells").glob("[0-9a-f]*[0-9a-f].csv"))
    assert 3 <= len(cells) < 8
    truncated, garbled = cells[0], cells[1]
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    garbled.write_bytes(os.urandom(len(garbled.read_bytes())))
    # --merge reports both and keeps them out of runs.csv
    assert cli.main(["sweep", "--merge", str(out)]) == 1
    merged = pd.read_csv(out / "runs.csv")
    assert not merged["cell"].isin([truncated.stem, garbled.stem]).any()
    assert merged["status"].eq("ok").all()
    err = capsys.readouterr().err
    assert truncated.name in err and garbled.name in err and "2 damaged" in err
    # --resume names the damaged cells (even with --quiet), reruns them and the missing ones
    assert cli.main(["sweep", str(path), "--out", str(out), "--resume", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert truncated.name in err and garbled.name in err and "running the cell again" in err
    resumed, ref = _rows(out), _rows(reference)
    pd.testing.assert_frame_equal(resumed, ref, check_exact=False, rtol=1e-12)
    assert not list((out / "cells").glob(".*.tmp"))


def test_merge_reports_damaged_cells(tmp_path: Path, reference: Path, capsys) -> None:
    out = tmp_path / "copy"
    (out / "cells").mkdir(parents=True)
    for p in (reference / "cells").iterdir():
        (out / "cells" / p.name).write_bytes(p.read_bytes())
    victim = sorted((out / "cells").glob("[0-9a-f]*[0-9a-f].csv"))[2]
    lines = victim.read_text().splitlines(keepends=True)
    victim.write_text("".join(lines[:-1]))  # a whole row lost, cut at a line end
    assert cli.main(["sweep", "--merge", str(out)]) == 1
    err = capsys.readouterr().err
    assert victim.name in err and "checksum" in err and "--resume" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_ends_the_sweep_with_one_line(tmp_path: Path, sig: int, code: int) -> None:
    path, out = _exp(tmp_path), tmp_path / "out"
    proc = _sweep_process(path, out)
    try:
        _wait_for_cells(proc, out, 1)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "cells finished" in lines[0] and f"--out {out} --resume" in lines[0]
    assert cli.main(["sweep", str(path), "--out", str(out), "--resume", "--quiet"]) == 0


# ------------------------------------------------------------------------------- disk full


def _full_disk(monkeypatch, allowed: int, code: int = errno.ENOSPC, named: bool = True) -> None:
    """Let ``allowed`` atomic writes through, then every write fails with ``code`` midway (the
    error names its file unless ``named`` is False: the caller must name it then)."""
    real = files.atomic_write
    count = {"n": 0}

    def write(path, writer):
        count["n"] += 1
        if count["n"] <= allowed:
            return real(path, writer)

        def half(fh):
            fh.write(b"partial")
            raise OSError(code, os.strerror(code), *([str(path)] if named else []))

        return real(path, half)

    monkeypatch.setattr(files, "atomic_write", write)


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _assert_whole(d: Path) -> None:
    """No temporary, empty or cut-short file anywhere under ``d``."""
    for p in d.rglob("*"):
        if not p.is_file():
            continue
        data = p.read_bytes()
        assert not p.name.endswith(".tmp"), p
        assert data, f"0-byte file {p}"
        if p.suffix in (".csv", ".md", ".json", ".toml"):
            assert data.endswith(b"\n") and b"partial" not in data, p
        if p.suffix == ".png":
            assert data.endswith(b"IEND\xaeB`\x82"), p
        if p.suffix == ".pdf":
            assert data.rstrip().endswith(b"%%EOF"), p


@pytest.fixture(scope="module")
def analysed(reference: Path, tmp_path_factory) -> Path:
    """A copy of the reference run with fits, figures and report."""
    d = tmp_path_factory.mktemp("analysed") / "run"
    d.mkdir()
    for name, data in _snapshot(reference).items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_bytes(data)
    for command in ("fit", "plot", "report"):
        assert cli.main([command, str(d)]) == 0
    return d


@pytest.mark.parametrize(("command", "allowed"), [("merge", 0), ("merge", 1), ("fit", 0),
                                                   ("fit", 2), ("plot", 0), ("plot", 3),
                                                   ("report", 0)])
def test_disk_full_leaves_no_partial_file(analysed: Path, monkeypatch, capsys, command: str,
                                          allowed: int) -> None:
    before = _snapshot(analysed)
    _full_disk(monkeypatch, allowed)
    argv = ["sweep", "--merge", str(analysed)] if command == "merge" else [command, str(analysed)]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    _assert_whole(analysed)
    after = _snapshot(analysed)
    assert set(after) == set(before)  # nothing removed, nothing half-added


@pytest.mark.parametrize("allowed", [0, 3, 8])
def test_disk_full_during_sweep(tmp_path: Path, monkeypatch, capsys, allowed: int) -> None:
    path, out = _exp(tmp_path), tmp_path / "out"
    _full_disk(monkeypatch, allowed)
    assert cli.main(["sweep", str(path), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err
    _assert_whole(out)
    monkeypatch.undo()
    assert cli.main(["sweep", str(path), "--out", str(out), "--resume", "--quiet"]) == 0
    _assert_whole(out)


# ------------------------------------------------------------------------------- results


def test_fresh_sweep_refuses_finished_results_and_overwrite_retires_derived(
        analysed: Path, tmp_path: Path, capsys) -> None:
    path = _exp(tmp_path)
    assert cli.main(["sweep", str(path), "--out", str(analysed), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--resume" in err
    assert (analysed / "fits.csv").exists() and (analysed / "figures").is_dir()
    stale = tmp_path / "stale"
    stale.mkdir()
    for name in ("runs.csv", "fits.csv", "report.md"):
        (stale / name).write_bytes((analysed / name).read_bytes())
    (stale / "figures").mkdir()
    (stale / "notes.txt").write_text("mine\n")
    assert cli.main(["sweep", str(path), "--out", str(stale), "--overwrite", "--quiet"]) == 0
    left = sorted(p.name for p in stale.iterdir())
    assert "fits.csv" not in left and "report.md" not in left and "figures" not in left
    assert "notes.txt" in left and "runs.csv" in left


def test_files_get_the_users_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        files.atomic_write_text(tmp_path / "a.txt", "x\n")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644


def test_environment_dirty_flag_ignores_results(monkeypatch) -> None:
    from subquad.harness import environment

    assert "results" not in environment.SOURCE_PATHS
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="abc\n", stderr="")

    monkeypatch.setattr(environment.subprocess, "run", fake_run)
    info = environment._git()
    status = [c for c in calls if "status" in c][0]
    assert status[status.index("--") + 1:] == list(environment.SOURCE_PATHS)
    assert info["commit"] == "abc"
