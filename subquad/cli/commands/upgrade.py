"""``subquad upgrade``: rewrite a run measured in an older results schema in the current one."""

from __future__ import annotations

import argparse

from subquad.cli.common import command
from subquad.cli.present import wrote


def register(sub: argparse._SubParsersAction) -> None:
    command(sub, "upgrade", run, "run directory (holds runs.csv)",
            help="rewrite runs.csv and training.csv of an older results schema in the current "
            "one (variant columns from experiment.toml)")


def run(args: argparse.Namespace) -> int:
    from subquad.analysis.upgrade import needs_upgrade, upgrade  # noqa: PLC0415 (on use)
    from subquad.results.rundir import RunDir  # noqa: PLC0415 (on use)

    rd = RunDir.load(args.dir)
    if not needs_upgrade(rd):
        print(f"{rd.path} is already in the current results schema")
        return 0
    wrote(upgrade(rd))
    return 0
