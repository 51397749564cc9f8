"""``subquad plot``: the figures of a run directory (PNG and PDF)."""

from __future__ import annotations

import argparse

from subquad.cli.common import command, derive
from subquad.cli.present import wrote


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "plot", run, "run directory (holds runs.csv)",
            help="draw the figures of a run directory")


def run(args: argparse.Namespace) -> int:
    from subquad.analysis.plots import plot_run  # noqa: PLC0415 (on use)

    written = derive(args.dir, "plot", plot_run)
    wrote(written or [])
    if not written:
        print("no figures: the run has no data for any of them")
    return 0
