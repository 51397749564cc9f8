"""What several commands share: a command's parser (with its run directory argument), the
``--force`` of the commands that read a calibration, and writing what derives from a run."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


def command(sub: argparse._SubParsersAction, name: str, run: Callable[[argparse.Namespace], int],
            dir_help: str | None = None, metavar: str = "DIR", **kwargs: Any
            ) -> argparse.ArgumentParser:
    """The parser of ``subquad <name>`` (``kwargs``: help, description) that runs ``run``;
    with ``dir_help`` its first argument is the run directory ``dir``."""
    p = sub.add_parser(name, **kwargs)
    if dir_help is not None:
        p.add_argument("dir", metavar=metavar, help=dir_help)
    p.set_defaults(func=run)
    return p


def add_force(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true",
                   help="use a calibration of another dtype than the run's")


def derive(run_dir: str, name: str, write: Callable[[Any], Any]) -> Any:
    """``write(rd)`` on the run directory ``rd`` (its fits checked when present); a failed write
    says that runs.csv and the fits are unchanged and that ``subquad <name> DIR`` continues."""
    from subquad.results.rundir import RunDir  # noqa: PLC0415 (on use)

    rd = RunDir.load(run_dir, fitted=None)
    with rd.writing(f"runs.csv and the fits in {rd.path} are unchanged",
                    f"subquad {name} {rd.path}"):
        return write(rd)
