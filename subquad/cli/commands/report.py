"""``subquad report``: claims.csv and the Markdown report of a run directory."""

from __future__ import annotations

import argparse

from subquad.analysis.report import write_report
from subquad.results.rundir import RunDir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the Markdown report of a run directory")
    p.add_argument("dir", metavar="DIR", help="run directory (holds runs.csv, fits.csv)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(f"wrote {write_report(RunDir.load(args.dir, fitted=None))}")
    return 0
