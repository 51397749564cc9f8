"""A run directory owns its invariants (issue 22): one writer at a time, one experiment, cell
files with checksums, nothing removed that the suite did not write (and every removal printed),
derived tables written as a set, write errors that say how to continue, no row fitted twice.

Every test drives the command line, so it also runs against an older tree (PYTHONPATH), where
each reproduces its defect. Cells are dense-gn only (no kernels to compile), m <= 512.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import subquad
from subquad import cli
from tests.experiment_text import grid
from tests.test_faults import _full_disk as full_disk

#: the tree under test (its Makefile too): this checkout, or the one PYTHONPATH names
TREE = Path(subquad.__file__).resolve().parents[1]

RUN = '\nname = "rundir"\n\n[[methods]]\nmethod = "dense-gn"\n' + grid("64, 128, 256, 512", 3)
#: slow enough (0.25 s a sample, about 8 s in all) for a second process to meet the first one
SLOW = RUN.replace("[64, 128, 256, 512]", "[64, 96, 128, 192, 256, 384, 512, 768]").replace(
    "min_sample_seconds = 0\n", "min_sample_seconds = 0.25\n")
#: a cell run: "[k/N] method=... -> ok (0.4 s) ETA ..." (not "ok (done before)")
RAN = re.compile(r"^\[\d+/\d+\] .* -> \S+ \(\d+\.\d s\)", re.M)


def _write(tmp: Path, text: str, name: str = "exp.toml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _sweep(path: Path, out: Path, *extra: str) -> int:
    return cli.main(["sweep", str(path), "--out", str(out), "--quiet", *extra])


def _process(*argv: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(TREE)}
    return subprocess.Popen([sys.executable, "-m", "subquad", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cells(out: Path) -> list[Path]:
    return sorted(p for p in (out / "cells").glob("*.csv") if re.fullmatch(r"[0-9a-f]{16}", p.stem))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished run of RUN (copy it before changing it)."""
    tmp = tmp_path_factory.mktemp("run")
    assert _sweep(_write(tmp, RUN), tmp / "out") == 0
    return tmp / "out"


def _copy(run: Path, tmp: Path) -> Path:
    shutil.copytree(run, tmp / "run")
    return tmp / "run"


# ------------------------------------------------------------------------------- the lock


def test_second_sweep_into_the_same_directory_exits_2_naming_the_first(tmp_path) -> None:
    """Two `subquad sweep X --out SAME` at once: one runs the cells, the other exits 2 naming
    it (the runner takes about 30 s, so they overlap; it is stopped once the other is done)."""
    path, out = _write(tmp_path, SLOW.replace("= 0.25", "= 1")), tmp_path / "out"
    procs = [_process("sweep", str(path), "--out", str(out)) for _ in range(2)]
    try:
        deadline = time.time() + 300
        while all(p.poll() is None for p in procs) and time.time() < deadline:
            time.sleep(0.05)
        loser = next(p for p in procs if p.poll() is not None)
        runner = procs[1 - procs.index(loser)]
        _, err = loser.communicate()
        assert runner.poll() is None, "the two sweeps did not overlap"
        while not _cells(out) and runner.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert _cells(out)  # the runner runs the cells
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert loser.returncode == 2, err
    assert f"pid {runner.pid}" in err and "subquad sweep" in err
    assert not RAN.search(err)  # it ran no cell


def test_concurrent_resumes_measure_no_cell_twice(run: Path, tmp_path) -> None:
    path, out = _write(tmp_path, SLOW), tmp_path / "out"
    assert _sweep(path, out) == 0
    gone = _cells(out)[::2]
    for p in gone:
        p.unlink()
    procs = [_process("sweep", str(path), "--out", str(out), "--resume") for _ in range(2)]
    errs = [p.communicate(timeout=300)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 0], [0, 2]), errs
    assert sum(len(RAN.findall(e)) for e in errs) == len(gone), errs  # each missing cell once
    runs = pd.read_csv(out / "runs.csv")
    assert runs["cell"].nunique() == 8
    assert runs.groupby("cell")["started"].nunique().eq(1).all()
    assert not runs.duplicated(["cell", "sample", "phase"]).any()


def test_readers_are_not_blocked_by_a_sweep(run: Path, tmp_path) -> None:
    d = _copy(run, tmp_path)
    assert cli.main(["fit", str(d)]) == 0
    with open(d / ".subquad.lock", "a") as fh:  # held as a running sweep holds it
        import fcntl  # noqa: PLC0415

        fcntl.flock(fh, fcntl.LOCK_EX)
        assert cli.main(["report", str(d)]) == 0
        assert cli.main(["sweep", "--merge", str(d)]) == 2


# --------------------------------------------------------------------- experiment identity


@pytest.mark.parametrize("change", [("name = \"rundir\"", "name = \"other\""),
                                    ("samples = 3", "samples = 4")])
def test_resume_with_another_experiment_exits_2_naming_both(run: Path, tmp_path, capsys,
                                                            change) -> None:
    d = _copy(run, tmp_path)
    before = {n: (d / n).read_bytes() for n in ("runs.csv", "experiment.toml")}
    other = _write(tmp_path, RUN.replace(*change), "other.toml")
    capsys.readouterr()
    assert _sweep(other, d, "--resume") == 2
    err = capsys.readouterr().err
    assert "rundir" in err and change[1].startswith("samples") or "other" in err
    assert len(re.findall(r"\(([0-9a-f]{6})\)", err)) == 2  # both short identities
    assert {n: (d / n).read_bytes() for n in before} == before


def test_copied_cells_of_another_experiment_are_reported_and_left_out(run: Path, tmp_path,
                                                                      capsys) -> None:
    d = _copy(run, tmp_path)
    other = _write(tmp_path, RUN.replace("samples = 3", "samples = 2"), "other.toml")
    assert _sweep(other, tmp_path / "other") == 0
    copied = _cells(tmp_path / "other")
    for p in copied:
        shutil.copy(p, d / "cells" / p.name)
    capsys.readouterr()
    assert cli.main(["sweep", "--merge", str(d)]) == 2
    err = capsys.readouterr().err
    assert "4 cell file(s)" in err and "rundir" in err and "left out" in err
    runs = pd.read_csv(d / "runs.csv")
    assert len(runs) == len(pd.read_csv(run / "runs.csv"))  # 3 samples, not 2
    assert runs.groupby("cell")["sample"].max().eq(2).all()
    assert all((d / "cells" / p.name).exists() for p in copied)  # not removed
    assert _sweep(_write(tmp_path, RUN), d, "--resume") == 0
    assert "left out of runs.csv" in capsys.readouterr().err
    assert len(pd.read_csv(d / "runs.csv")) == len(runs)


# -------------------------------------------------------------------------------- checksums


def test_cell_without_its_checksum_line_is_damaged_and_rerun(run: Path, tmp_path,
                                                             capsys) -> None:
    d = _copy(run, tmp_path)
    victim = _cells(d)[-1]
    lines = victim.read_text().splitlines(keepends=True)
    victim.write_text("".join(lines[1:5]))  # no checksum line, rows cut at a row boundary
    capsys.readouterr()
    assert cli.main(["sweep", "--merge", str(d)]) == 1
    assert victim.name in capsys.readouterr().err
    full = pd.read_csv(run / "runs.csv")
    assert len(pd.read_csv(d / "runs.csv")) < len(full)
    assert _sweep(_write(tmp_path, RUN), d, "--resume") == 0
    assert victim.name in capsys.readouterr().err
    assert victim.read_text().startswith("# subquad-sha256 ")
    assert len(pd.read_csv(d / "runs.csv")) == len(full)


# ------------------------------------------------------------------------------ removals


def test_only_files_the_suite_wrote_are_removed_and_each_is_named(run: Path, tmp_path,
                                                                  capsys) -> None:
    d = _copy(run, tmp_path)
    assert cli.main(["fit", str(d)]) == 0
    mine = [d / "my_notes.csv", d / "cells" / "my_notes.csv", d / "notes.txt",
            d / "cells" / "0123.csv"]
    for p in mine:
        p.write_text("mine\n")
    path = _write(tmp_path, RUN)
    (d / "cells" / _cells(d)[0].name).unlink()  # one cell to rerun: runs.csv changes
    capsys.readouterr()
    assert _sweep(path, d, "--resume") == 0
    err = capsys.readouterr().err
    assert all(p.exists() for p in mine)
    assert "fits.csv" in err  # retired (runs.csv changed), and said so under --quiet
    cells = [p.name for p in _cells(d)]
    assert _sweep(path, d, "--overwrite") == 0
    err = capsys.readouterr().err
    assert all(p.exists() for p in mine)
    assert all(name in err for name in cells) and "runs.csv" in err


# ------------------------------------------------------------------------ derived as a set


def _full_disk(monkeypatch, allowed: int, code: int = errno.ENOSPC) -> None:
    """The fault suite's full disk, with errors that do not name their file (we must)."""
    full_disk(monkeypatch, allowed, code, named=False)


DERIVED = ("fits.csv", "local_slopes.csv", "crossover.csv", "selfcheck.csv", "dropped.csv")


def test_fit_writes_its_tables_as_a_set(run: Path, tmp_path, monkeypatch, capsys) -> None:
    d = _copy(run, tmp_path)
    assert cli.main(["fit", str(d)]) == 0
    before = {n: (d / n).read_bytes() for n in DERIVED}
    runs = pd.read_csv(d / "runs.csv", dtype=str, keep_default_na=False)
    runs = runs[runs["m"] != "512"]  # another runs.csv: every table changes
    runs.to_csv(d / "runs.csv", index=False)
    _full_disk(monkeypatch, 2)
    capsys.readouterr()
    assert cli.main(["fit", str(d)]) == 1
    err = capsys.readouterr().err
    assert {n: (d / n).read_bytes() for n in DERIVED} == before  # all old, none new
    assert not list(d.glob(".*.tmp"))
    assert "No space left on device" in err and f"subquad fit {d}" in err
    assert re.search(r"cannot write \S+\.csv", err)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES])
def test_write_errors_name_the_file_what_was_kept_and_how_to_go_on(tmp_path, monkeypatch,
                                                                   capsys, code) -> None:
    path, out = _write(tmp_path, RUN), tmp_path / "out"
    _full_disk(monkeypatch, 4, code)
    assert _sweep(path, out) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert os.strerror(code) in err and re.search(r"cannot write \S*/out/\S+", err)
    assert f"kept in {out}/cells" in err
    assert f"subquad sweep {path} --out {out} --resume" in err
    monkeypatch.undo()
    assert _sweep(path, out, "--resume") == 0


@pytest.mark.parametrize("command", ["plot", "report"])
def test_write_errors_of_plot_and_report(run: Path, tmp_path, monkeypatch, capsys,
                                         command) -> None:
    d = _copy(run, tmp_path)
    assert cli.main(["fit", str(d)]) == 0
    _full_disk(monkeypatch, 0, errno.EROFS)
    capsys.readouterr()
    assert cli.main([command, str(d)]) == 1
    err = capsys.readouterr().err
    assert "Read-only file system" in err and f"subquad {command} {d}" in err
    assert "cannot write" in err and "unchanged" in err


# ------------------------------------------------------------------------- duplicated rows


def test_duplicated_rows_are_dropped_with_a_reason_not_fitted_twice(run: Path,
                                                                    tmp_path) -> None:
    d = _copy(run, tmp_path)
    assert cli.main(["fit", str(d)]) == 0
    clean = pd.read_csv(d / "fits.csv")
    runs = pd.read_csv(d / "runs.csv", dtype=str, keep_default_na=False)
    twice = runs[runs["m"].isin(["64", "128"])]
    pd.concat([runs, twice]).to_csv(d / "runs.csv", index=False)
    assert cli.main(["fit", str(d)]) == 0
    dropped = pd.read_csv(d / "dropped.csv")
    dup = dropped[dropped["reason"] == "duplicate row"]
    assert dup["rows"].sum() == len(twice)
    pd.testing.assert_frame_equal(pd.read_csv(d / "fits.csv"), clean)


# --------------------------------------------------------------------------- make sweep


def test_make_experiment_twice_changes_only_regenerated_files(tmp_path) -> None:
    """`make experiment` on a committed result (as `make sweep` on results/default): git
    shows modified files only, none deleted, every derived file newer than runs.csv."""
    if shutil.which("make") is None or shutil.which("git") is None:
        pytest.skip("needs make and git")
    repo = tmp_path / "clone"
    (repo / "experiments").mkdir(parents=True)
    shutil.copy(TREE / "Makefile", repo / "Makefile")
    shutil.copy(TREE / ".gitignore", repo / ".gitignore")
    (repo / "experiments" / "tiny.toml").write_text(RUN.replace("[fixed]", """[[methods]]
method = "subquad"
update = "scatter"

[fixed]""").replace("[64, 128, 256, 512]", "[64, 96, 128]").replace("samples = 3", "samples = 2")
        + "\n[calibration]\nenabled = true\nm = [256, 512, 1024]\n")
    (repo / "pyproject.toml").write_text("")
    (repo / ".venv").mkdir()
    time.sleep(0.01)
    (repo / ".venv" / ".installed").write_text("")
    env = {**os.environ, "PYTHONPATH": str(TREE), "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    py = f"{sys.executable}"
    make = ["make", "-s", "experiment", "EXPERIMENT=tiny", f"PY={py}",
            f"SUBQUAD={py} -m subquad"]

    def sh(*argv: str) -> str:
        done = subprocess.run(argv, cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{argv}: {done.stdout}\n{done.stderr}"
        return done.stdout

    sh(*make)
    out = repo / "results" / "tiny"
    assert (out / "axis_claims.csv").exists()  # subquad report writes them with claims.csv
    sh("git", "init", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-q", "-m", "results")
    tracked = sh("git", "ls-files", "results").split()
    sh(*make)
    status = sh("git", "status", "--porcelain", "--untracked-files=all").splitlines()
    assert status and all(line.startswith(" M ") for line in status), status
    runs = (out / "runs.csv").stat().st_mtime_ns
    measured = ("runs.csv", "training.csv", "environment.json", "experiment.toml", "run.json")
    for name in tracked:
        p = repo / name
        if p.name not in measured and "machines" not in p.parts:
            assert p.stat().st_mtime_ns >= runs, f"{name} is older than runs.csv"
