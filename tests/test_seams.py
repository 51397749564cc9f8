"""Each seam of docs/DESIGN.md takes a new thing in one place: a table (one declaration), a
method (one registration), a command (one module); and a command parses runs.csv once."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from subquad import cli, files
from subquad.cli import commands
from subquad.model import methods
from subquad.results import schema
from subquad.results.rundir import RunDir
from subquad.results.schema import Table
from tests.experiment_text import DENSE_AND_SCATTER, grid

TWIN = "dense-gn-twin"


def test_a_new_table_is_one_declaration(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(schema.TABLES, "notes", Table("notes", "series ratio:float", ("ratio",)))
    rd = RunDir(tmp_path)
    rd.write_table("notes", [{"series": "a", "ratio": 2}, {"series": "nan", "ratio": 0.5}])
    again = RunDir(tmp_path).table("notes")
    assert list(again["series"]) == ["a", "nan"] and list(again["ratio"]) == [2.0, 0.5]
    assert (tmp_path / "notes.csv").read_text().splitlines()[0] == "series,ratio,schema"
    assert tmp_path / "notes.csv" in rd.derived_files()  # a re-sweep retires it
    pd.DataFrame({"series": ["a"], "ratio": [1.0]}).to_csv(tmp_path / "notes.csv", index=False)
    with pytest.raises(Exception, match="subquad fit"):  # no schema column: refreshed, named
        RunDir(tmp_path).table("notes")


@pytest.fixture
def twin(monkeypatch):
    """A method registered once: dense Gauss-Newton under another name."""
    base = methods.get_method("dense-gn")
    monkeypatch.setitem(methods.METHODS, TWIN, methods.Method(TWIN, base.kernels, 1.0,
                                                              ("cholesky",)))
    return TWIN


@pytest.fixture
def twin_run(tmp_path: Path, twin: str) -> Path:
    """A tiny sweep of the registered method beside subquad, fitted."""
    exp = tmp_path / "twin.toml"
    exp.write_text(f'name = "twin"\ndtype = "float64"\n[[methods]]\nmethod = "{twin}"\n'
                   + DENSE_AND_SCATTER.split("\n\n", 1)[1] + grid("64, 128, 256", 3))
    out = tmp_path / "run"
    assert cli.main(["sweep", str(exp), "--out", str(out), "--quiet"]) == 0
    return out


def test_a_registered_method_reaches_every_command(twin_run: Path, twin: str, capsys) -> None:
    assert cli.main(["train", "--method", twin, "--m", "64", "--n", "4", "--iters", "2",
                     "--json"]) == 0
    runs = pd.read_csv(twin_run / "runs.csv", keep_default_na=False)
    assert set(runs["method"]) == {twin, "subquad"} and set(runs["status"]) == {"ok"}
    assert cli.main(["fit", str(twin_run)]) == 0
    fits = pd.read_csv(twin_run / "fits.csv", keep_default_na=False)
    work = fits[(fits["method"] == twin) & (fits["phase"] == "iteration")
                & (fits["quantity"] == "work")]
    assert len(work) == 1 and abs(work["exponent"].iloc[0] - 2.0) < 0.05
    assert cli.main(["report", str(twin_run)]) == 0
    assert twin in (twin_run / "report.md").read_text()
    capsys.readouterr()
    assert cli.main(["check", str(twin_run), "--baseline", str(twin_run)]) in (0, 1)
    assert twin in capsys.readouterr().out


def test_each_command_parses_runs_csv_once(twin_run: Path) -> None:
    runs, base = str(twin_run / "runs.csv"), twin_run.with_name("base")
    shutil.copytree(twin_run, base)
    for argv in (["fit", str(twin_run)], ["report", str(twin_run)],
                 ["check", str(twin_run), "--baseline", str(base)],
                 ["plot", str(twin_run)]):
        files.PARSES.clear()
        cli.main(argv)
        assert files.PARSES[runs] == 1, (argv, dict(files.PARSES))
        assert argv[0] != "check" or files.PARSES[str(base / "runs.csv")] == 1


def test_a_new_command_is_one_module(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "hello.py").write_text(textwrap.dedent('''
        def register(sub):
            p = sub.add_parser("hello", help="say hello")
            p.add_argument("--who", default="world")
            p.set_defaults(func=lambda args: print(f"hello {args.who}") or 0)
    '''))
    monkeypatch.setattr(commands, "__path__", [*commands.__path__, str(tmp_path)])
    assert cli.main(["hello", "--who", "seams"]) == 0
    assert capsys.readouterr().out == "hello seams\n"
