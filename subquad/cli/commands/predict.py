"""``subquad predict``: another machine's seconds, exponents and crossover from a run."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from subquad.cli.common import add_force, command
from subquad.cli.present import num


def register(sub: argparse._SubParsersAction) -> None:
    """``subquad predict RUN --calibration OTHER.json``."""
    p = command(sub, "predict", run, "run directory (runs.csv with per-phase bytes)", "RUN",
                help="predict another machine's seconds, exponents, crossover and speed-up "
                "from this run's counts and its calibration")
    p.add_argument("--calibration", required=True, metavar="FILE",
                   help="calibration.json of the machine to predict (a GPU's included)")
    p.add_argument("--machine", help="machine id inside FILE when it holds several")
    p.add_argument("--compare", metavar="DIR",
                   help="a run measured on that machine: print measured beside predicted")
    p.add_argument("--out", metavar="FILE", help="also write the cells as CSV")
    add_force(p)


def run(args: argparse.Namespace) -> int:
    from subquad.analysis.perfmodel.predict import predict_run  # noqa: PLC0415 (on use)
    from subquad.files import atomic_write_frame  # noqa: PLC0415 (on use)
    from subquad.results.rundir import RunDir  # noqa: PLC0415 (on use)

    res = predict_run(RunDir.load(args.dir), args.calibration, args.machine, args.compare,
                      args.force)
    mach = res["machine"].iloc[0]
    print(f"prediction for machine {mach['machine']} ({mach['backend']}, threads "
          f"{mach['threads'] or 'all'}) from the counts of {args.dir}")
    cells = res["cells"]
    has = "measured" in cells
    # the sizes that tell two series of one method apart (e.g. n = 16 and n = 64)
    vary = [c for c in ("n", "d", "L", "c", "dtype", "options") if c in cells
            and cells.groupby("method")[c].nunique().max() > 1]

    def who(r: Any) -> str:
        tag = " ".join(f"{c}={getattr(r, c):g}" if isinstance(getattr(r, c), float)
                       else f"{c}={getattr(r, c)}" for c in vary)
        return f"{r.method} {tag}".strip()

    width = max([len(who(r)) for r in cells.itertuples()] + [9])
    print(f"{'series':<{width}} {'m':>7} {'predicted s':>12}"
          + (f" {'measured s':>11} {'ratio':>6}" if has else ""))
    for r in cells.sort_values(["method", *vary, "m"]).itertuples():
        line = f"{who(r):<{width}} {r.m:>7g} {r.predicted:>12.4g}"
        if has:
            line += f" {num(r.measured, '.4g'):>11} {num(r.ratio, '.2f'):>6}"
        print(line)
    for r in res["summary"].itertuples():
        meas = getattr(r, "measured_exponent", math.nan)
        cmp = (f" (over m {r.compared_range}: predicted {num(r.compared_model_exponent)}, "
               f"measured {num(meas)})") if has else ""
        print(f"{who(r)}: exponent {num(r.model_exponent)} over m {r.fit_range}{cmp}"
              + f"; counted work {num(r.work_exponent)}; asymptotic "
              f"{num(r.asymptotic_exponent)} (m {r.asymptotic_range}, extrapolation)")
    ctx = [c for c in vary if c != "options"]

    def at(r: Any) -> str:
        return "".join(f", {c} = {getattr(r, c):g}" for c in ctx)

    for r in res["crossover"].itertuples():
        print(f"crossover m* = {num(r.m_star, '.0f')} ({r.kind}) for subquad [{r.sub_options}]"
              f"{at(r)}")
    for r in res["speedup"].itertuples():
        print(f"speed-up dense-gn / subquad at m = {r.m:g}{at(r)}: {r.speedup:.2f}x ({r.kind})")
    if args.out:
        print(f"wrote {atomic_write_frame(Path(args.out), cells) or args.out}")
    return 0
