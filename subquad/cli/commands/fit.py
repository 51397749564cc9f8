"""``subquad fit``: exponents with bootstrap intervals, local slopes, crossover, self-check."""

from __future__ import annotations

import argparse
from pathlib import Path

from subquad.cli.common import command
from subquad.cli.present import dropped, first_line, num, wrote
from subquad.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "fit", run, "run directory (holds runs.csv)",
                help="fit exponents with bootstrap intervals and the crossover")
    p.add_argument("--window", choices=("all", "auto"),
                   help="fit window: all points, or drop overhead-dominated leading points "
                   "(default: the experiment's [fit] table, else all)")
    p.add_argument("--min-m", type=int,
                   help="fit exponents in m from this width on (crossover still uses every m)")


def _fit_options(args: argparse.Namespace) -> dict:
    """Fit options: the run's [fit] table (from its copied experiment.toml), then the flags."""
    from subquad.harness.config import Where, fit_options, tomllib  # noqa: PLC0415 (on use)

    opts: dict = {}
    exp = Path(args.dir) / "experiment.toml"
    if exp.is_file():
        try:
            raw = tomllib.loads(exp.read_bytes().decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(str(exp), f"not valid TOML ({first_line(exc)}); restore the "
                              "experiment file the sweep copied there") from None
        opts = fit_options(raw, Where(exp))
    if args.window is not None:
        opts["window"] = args.window
    if args.min_m is not None:
        if args.min_m < 1:
            raise ConfigError("min-m", f"must be a positive width, got {args.min_m}")
        opts["min_axis"] = {"m": args.min_m}
    return opts


def run(args: argparse.Namespace) -> int:
    from subquad.analysis.fit import benchmark_run, fit_run  # noqa: PLC0415 (on use)
    from subquad.analysis.limits import load_limits  # noqa: PLC0415 (on use)
    from subquad.analysis.upgrade import needs_upgrade, upgrade  # noqa: PLC0415 (on use)
    from subquad.results.rundir import RunDir  # noqa: PLC0415 (on use)

    target, options = Path(args.dir), _fit_options(args)
    if target.suffix.lower() == ".json" and target.is_file():
        rd = benchmark_run(target)
    else:
        rd = RunDir.load(args.dir)
        if needs_upgrade(rd):
            upgrade(rd)
            print(f"migrated {target}/runs.csv to the current results schema "
                  "(variant columns from its experiment.toml)")
    with rd.writing(f"the previous fits in {rd.path} are unchanged", f"subquad fit {target}"):
        paths = fit_run(rd, **options)
    fits = rd.table("fits")
    main = fits[(fits["fit"] == "slope") & fits["phase"].isin(["iteration", "init", "kernel"])
                & fits["quantity"].isin(["seconds", "work"])]
    print(f"{'method':<10} {'options':<44} {'phase':<9} {'quantity':<8} {'axis':<4} "
          f"{'exponent':>8}  {'95% interval':<17} context")
    for r in main.itertuples():
        name = r.method if r.label == r.method else f"{r.method}:{r.label}"
        print(f"{name:<10} {r.options:<44} {r.phase:<9} {r.quantity:<8} {r.axis:<4} "
              f"{num(r.exponent):>8}  [{num(r.ci_low)}, "
              f"{num(r.ci_high)}]".ljust(112) + f" {r.context}")
    for r in rd.table("crossover").itertuples():
        print(f"crossover ({r.quantity}, {r.context}, {r.options} vs {r.baseline_options}): "
              f"m* = {num(r.m_star, '.0f')} [{num(r.ci_low, '.0f')}, "
              f"{num(r.ci_high, '.0f')}] ({r.kind}); speed-up at m = "
              f"{num(r.max_m, '.0f')}: {num(r.speedup_at_max_m, '.2f')}x")
    trust = paths.trustworthy
    tol = load_limits().calibration_tolerance
    if trust is not None:
        print("self-check: " + ("calibration kernels ok" if trust else
                                f"calibration exponents off by more than {tol:g}: "
                                "UNTRUSTWORTHY"))
    elif rd.table("selfcheck") is not None and rd.table("selfcheck")["kernel"].ne(
            "not run").any():
        print("self-check: could not be decided (a calibration kernel has fewer than 3 "
              "usable widths)")
    dropped(paths.dropped, "dropped {total} row(s) of runs.csv that cannot be fitted "
            f"(listed in {paths['dropped']}):")
    wrote(paths.values())
    return 0
