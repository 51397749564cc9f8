"""``subquad model``: predict every cell's phases from counted work and the calibration."""

from __future__ import annotations

import argparse

from subquad.cli.common import add_force, command
from subquad.cli.present import num, wrote


def register(sub: argparse._SubParsersAction) -> None:
    """``subquad model DIR [--calibration FILE]``."""
    p = command(sub, "model", run, "run directory (runs.csv with per-phase bytes)",
                help="predict every cell's phases from counted work, bytes and the machine's "
                "calibration; fit efficiency factors; explain exponents")
    p.add_argument("--calibration", metavar="FILE",
                   help="calibration.json of the run's machine (default DIR/calibration.json)")
    p.add_argument("--min-m", type=float,
                   help="fit factors and exponents from this width (default: the run's "
                   "[fit] min_m)")
    add_force(p)


def run(args: argparse.Namespace) -> int:
    from subquad.analysis.perfmodel.predict import model_run  # noqa: PLC0415 (on use)
    from subquad.results.rundir import RunDir  # noqa: PLC0415 (on use)

    rd = RunDir.load(args.dir)
    paths = model_run(rd, args.calibration, min_m=args.min_m, force=args.force)
    print(f"{'method':<9} {'widths':<12} {'measured':>9} {'model':>7} {'fitted':>7} "
          f"{'work':>6} {'asympt.':>7}")
    for r in rd.table("model_summary").itertuples():
        print(f"{r.method:<9} {r.fit_range:<12} {num(r.measured_exponent):>9} "
              f"{num(r.model_exponent):>7} {num(r.fitted_exponent):>7} "
              f"{num(r.work_exponent, '.2f'):>6} {num(r.asymptotic_exponent, '.2f'):>7}")
    model = rd.table("model")
    it = model[model["phase"] == "iteration"]
    for meth, g in it.groupby("method"):
        r = g["ratio"].astype(float)
        print(f"{meth}: predicted / measured iteration seconds {r.min():.2f}..{r.max():.2f} "
              f"over {len(g)} cells")
    wrote(paths.values())
    return 0
