"""``subquad sweep``: run an experiment file's cells into a run directory (or merge it)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from subquad.cli.common import command
from subquad.errors import ConfigError
from subquad.vocabulary import EXECUTOR_KINDS


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "sweep", run, help="run an experiment file: every cell, timed, into runs.csv",
                description="Run the cells of an experiment TOML (see README, Sweeps). "
                "`subquad sweep --merge DIR` only rebuilds DIR/runs.csv.")
    p.add_argument("config", nargs="?", metavar="CONFIG", help="experiment file (.toml)")
    p.add_argument("--out", metavar="DIR", help="output directory (default results/<name>)")
    p.add_argument("--resume", action="store_true",
                   help="keep finished cell files and run only the missing or damaged cells")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the results already in the output directory (cells, "
                   "runs.csv and the fits, report and figures derived from it)")
    p.add_argument("--budget", type=float, metavar="S",
                   help="seconds for the whole sweep; cells left are recorded as censored")
    p.add_argument("--executor", choices=EXECUTOR_KINDS,
                   help="where cells run (default: the file's [executor] kind, else local)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--merge", metavar="DIR", help="only merge DIR/cells/*.csv into runs.csv")
    g = p.add_argument_group("slurm (override the file's [executor] table)")
    g.add_argument("--partition")
    g.add_argument("--time", help="minutes or HH:MM:SS per task")
    g.add_argument("--gpus-per-task", type=int)
    g.add_argument("--array-parallelism", type=int)


def run(args: argparse.Namespace) -> int:
    from subquad.harness.config import parse_minutes  # noqa: PLC0415 (on use)
    from subquad.harness.sweep import merge_only, run_sweep  # noqa: PLC0415 (on use)

    if args.merge:
        if args.config:
            raise ConfigError("merge", "give either CONFIG or --merge DIR, not both")
        path, bad, foreign = merge_only(args.merge)
        print(f"wrote {path}")
        if bad:
            print(f"subquad: {len(bad)} damaged cell file(s) left out of {path}; "
                  f"`subquad sweep CONFIG --out {args.merge} --resume` runs them again",
                  file=sys.stderr)
        if foreign:
            print(f"subquad: error: merge: {foreign}", file=sys.stderr)
            return 2
        return 1 if bad else 0
    if not args.config:
        raise ConfigError("CONFIG", "missing experiment file, e.g. experiments/smoke.toml "
                          "(or --merge DIR)")
    overrides: dict[str, Any] = {"partition": args.partition, "gpus_per_task": args.gpus_per_task,
                                 "array_parallelism": args.array_parallelism}
    if args.time is not None:
        time = int(args.time) if args.time.isdigit() else args.time
        overrides["time"] = parse_minutes(time, "--time")
    run_dir = run_sweep(args.config, args.out, resume=args.resume, budget=args.budget,
                        executor=args.executor, progress=not args.quiet,
                        executor_options=overrides, overwrite=args.overwrite)
    print(f"wrote {run_dir / 'runs.csv'}")
    return 0
