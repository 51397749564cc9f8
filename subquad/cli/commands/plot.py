"""``subquad plot``: the figures of a run directory (PNG and PDF)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw the figures of a run directory")
    p.add_argument("dir", metavar="DIR", help="run directory (holds runs.csv)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from subquad.analysis.plots import plot_run  # noqa: PLC0415 (on use)
    from subquad.results.rundir import RunDir  # noqa: PLC0415 (on use)

    rd = RunDir.load(args.dir, fitted=None)
    with rd.writing(f"runs.csv and the fits in {rd.path} are unchanged", f"subquad plot {rd.path}"):
        written = plot_run(rd)
    for path in written or []:
        print(f"wrote {path}")
    if not written:
        print("no figures: the run has no data for any of them")
    return 0
