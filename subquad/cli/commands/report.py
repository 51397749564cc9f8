"""``subquad report``: claims.csv and the Markdown report of a run directory."""

from __future__ import annotations

import argparse

from subquad.cli.common import command, derive


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "report", run, "run directory (holds runs.csv, fits.csv)",
            help="write the Markdown report of a run directory")


def run(args: argparse.Namespace) -> int:
    from subquad.analysis.report import write_report  # noqa: PLC0415 (on use)

    print(f"wrote {derive(args.dir, 'report', write_report)}")
    return 0
