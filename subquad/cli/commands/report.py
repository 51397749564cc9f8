"""``subquad report``: claims.csv and the Markdown report of a run directory."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the Markdown report of a run directory")
    p.add_argument("dir", metavar="DIR", help="run directory (holds runs.csv, fits.csv)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from subquad.analysis.report import write_report  # noqa: PLC0415 (on use)
    from subquad.results.rundir import RunDir  # noqa: PLC0415 (on use)

    rd = RunDir.load(args.dir, fitted=None)
    with rd.writing(f"runs.csv and the fits in {rd.path} are unchanged",
                    f"subquad report {rd.path}"):
        print(f"wrote {write_report(rd)}")
    return 0
