"""Registration of the subcommands that live outside cli.py (sweep, fit, plot, report, check).

Each entry of ``REGISTER`` is a function ``register(subparsers)`` that adds one subcommand.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from subquad.errors import ConfigError

REGISTER: list = []


def _register(fn):
    REGISTER.append(fn)
    return fn


#: columns without which no analysis of a runs.csv is possible (the rest can be filled in)
RUNS_CORE = ("method", "phase", "m", "seconds")


def _run_dir(path: str, param: str = "DIR", fitted: bool | None = False) -> Path:
    """A run directory whose runs.csv (and fits.csv: if ``fitted``, or if present when
    ``fitted`` is None) is a sound subquad table.

    Checked here, before any analysis module runs, so an empty, binary, truncated or foreign
    file is one clear error (exit 2) whatever the analysis code does with it.
    """
    from subquad.files import read_table  # noqa: PLC0415
    from subquad.harness.tables import STATUSES  # noqa: PLC0415

    p = Path(path)
    if not p.exists():
        raise ConfigError(param, f"{p} does not exist; run `subquad sweep` first")
    if not p.is_dir():
        raise ConfigError(param, f"{p} is not a directory; give the run directory holding "
                          "runs.csv")
    runs_path = p / "runs.csv"
    if not runs_path.is_file():
        raise ConfigError(param, f"{p} has no runs.csv; run `subquad sweep ... --out {p}` "
                          "(or `subquad sweep --merge` on it) first")
    _complete_lines(runs_path)
    runs = read_table(runs_path, str(runs_path), RUNS_CORE, dtype=str, keep_default_na=False)
    if runs.empty:
        raise ConfigError(str(runs_path), "has no rows; the sweep recorded no cell")
    status = runs["status"] if "status" in runs else None
    # a table may carry no statuses at all (all ok); one that has them needs one on every row
    bad = None if status is None or (status == "").all() else ~status.isin(STATUSES)
    if bad is not None and bad.any():
        raise ConfigError(str(runs_path), f"row {int(bad.idxmax()) + 2} has status "
                          f"{runs['status'][bad].iloc[0]!r} (accepted: {', '.join(STATUSES)}); "
                          "the file is truncated or damaged: rebuild it with `subquad sweep "
                          f"--merge {p}`")
    fits_path = p / "fits.csv"
    if fitted or (fitted is None and fits_path.exists()):
        if not fits_path.is_file():
            raise ConfigError(param, f"{p} has no fits.csv; run `subquad fit {p}` first")
        _complete_lines(fits_path)
        read_table(fits_path, str(fits_path), ("method", "phase", "exponent"))
    return p


def _complete_lines(path: Path) -> None:
    """A table the project wrote ends with a newline; one that does not was cut short."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        if fh.tell() == 0:
            raise ConfigError(str(path), "is empty; rerun the step that writes it")
        fh.seek(-1, 2)
        if fh.read(1) != b"\n":
            raise ConfigError(str(path), "is truncated (its last line is incomplete); rerun "
                              "the step that writes it")


# ------------------------------------------------------------------------------- sweep


@_register
def register_sweep(sub: argparse._SubParsersAction) -> None:
    from subquad.harness.config import EXECUTOR_KINDS  # noqa: PLC0415

    p = sub.add_parser("sweep", help="run an experiment file: every cell, timed, into runs.csv",
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
    p.add_argument("--executor", choices=EXECUTOR_KINDS, default=None,
                   help="where cells run (default: the file's [executor] kind, else local)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--merge", metavar="DIR", help="only merge DIR/cells/*.csv into runs.csv")
    g = p.add_argument_group("slurm (override the file's [executor] table)")
    g.add_argument("--partition")
    g.add_argument("--time", help="minutes or HH:MM:SS per task")
    g.add_argument("--gpus-per-task", type=int)
    g.add_argument("--array-parallelism", type=int)
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    from subquad.harness.sweep import merge_only, run_sweep  # noqa: PLC0415

    if args.merge:
        if args.config:
            raise ConfigError("merge", "give either CONFIG or --merge DIR, not both")
        path, bad = merge_only(args.merge)
        print(f"wrote {path}")
        if bad:
            print(f"subquad: {len(bad)} damaged cell file(s) left out of {path}; "
                  f"`subquad sweep CONFIG --out {args.merge} --resume` runs them again",
                  file=sys.stderr)
            return 1
        return 0
    if not args.config:
        raise ConfigError("CONFIG", "missing experiment file, e.g. experiments/smoke.toml "
                          "(or --merge DIR)")
    overrides: dict[str, Any] = {"partition": args.partition,
                                 "gpus_per_task": args.gpus_per_task,
                                 "array_parallelism": args.array_parallelism}
    if args.time is not None:
        from subquad.harness.config import parse_minutes  # noqa: PLC0415

        overrides["time"] = parse_minutes(_int_or_str(args.time), "--time")
    run_dir = run_sweep(args.config, args.out, resume=args.resume, budget=args.budget,
                        executor=args.executor, progress=not args.quiet,
                        executor_options=overrides, overwrite=args.overwrite)
    print(f"wrote {run_dir / 'runs.csv'}")
    return 0


def _int_or_str(text: str) -> int | str:
    return int(text) if text.isdigit() else text


# ------------------------------------------------------------------------------- fit


@_register
def register_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit exponents with bootstrap intervals and the crossover")
    p.add_argument("dir", metavar="DIR", help="run directory (holds runs.csv)")
    p.add_argument("--window", choices=("all", "auto"), default=None,
                   help="fit window: all points, or drop overhead-dominated leading points "
                   "(default: the experiment's [fit] table, else all)")
    p.add_argument("--min-m", type=int, default=None,
                   help="fit exponents in m from this width on (crossover still uses every m)")
    p.set_defaults(func=cmd_fit)


def _num(x: Any, fmt: str = ".3f") -> str:
    """A number for a table line, '-' when missing (the schema's one formatter)."""
    from subquad.schema import fmt_number  # noqa: PLC0415

    return fmt_number(x, fmt, "-")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _fit_options(args: argparse.Namespace) -> dict:
    """Fit options: the run's [fit] table (from its copied experiment.toml), then the flags."""
    from subquad.harness.config import _Where, fit_options, tomllib  # noqa: PLC0415

    opts: dict = {}
    exp = Path(args.dir) / "experiment.toml"
    if exp.is_file():
        try:
            raw = tomllib.loads(exp.read_bytes().decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(str(exp), f"not valid TOML ({_first_line(exc)}); restore the "
                              "experiment file the sweep copied there") from None
        opts = fit_options(raw, _Where(exp))
    if args.window is not None:
        opts["window"] = args.window
    if args.min_m is not None:
        if args.min_m < 1:
            raise ConfigError("min-m", f"must be a positive width, got {args.min_m}")
        opts["min_axis"] = {"m": args.min_m}
    return opts


def cmd_fit(args: argparse.Namespace) -> int:
    from subquad.analysis.fit import fit_run  # noqa: PLC0415
    from subquad.analysis.limits import load_limits  # noqa: PLC0415
    from subquad.schema import load_table  # noqa: PLC0415

    target = Path(args.dir)
    if not (target.suffix.lower() == ".json" and target.is_file()):  # a benchmark JSON file
        target = _run_dir(args.dir)
    paths = fit_run(target, **_fit_options(args))
    if paths.migrated:
        print(f"migrated {target}/runs.csv to the current results schema "
              "(variant columns from its experiment.toml)")
    fits = load_table(paths["fits"], "fits")
    main = fits[(fits["fit"] == "slope") & fits["phase"].isin(["iteration", "init", "kernel"])
                & fits["quantity"].isin(["seconds", "work"])]
    print(f"{'method':<10} {'options':<44} {'phase':<9} {'quantity':<8} {'axis':<4} "
          f"{'exponent':>8}  {'95% interval':<17} context")
    for r in main.itertuples():
        name = r.method if r.label == r.method else f"{r.method}:{r.label}"
        print(f"{name:<10} {r.options:<44} {r.phase:<9} {r.quantity:<8} {r.axis:<4} "
              f"{_num(r.exponent):>8}  [{_num(r.ci_low)}, "
              f"{_num(r.ci_high)}]".ljust(112) + f" {r.context}")
    for r in load_table(paths["crossover"], "crossover").itertuples():
        print(f"crossover ({r.quantity}, {r.context}, {r.options} vs {r.baseline_options}): "
              f"m* = {_num(r.m_star, '.0f')} [{_num(r.ci_low, '.0f')}, "
              f"{_num(r.ci_high, '.0f')}] ({r.kind}); speed-up at m = "
              f"{_num(r.max_m, '.0f')}: {_num(r.speedup_at_max_m, '.2f')}x")
    trust = paths.trustworthy
    tol = load_limits().calibration_tolerance
    if trust is not None:
        print("self-check: " + ("calibration kernels ok" if trust else
                                f"calibration exponents off by more than {tol:g}: "
                                "UNTRUSTWORTHY"))
    elif Path(paths["selfcheck"]).is_file() and load_table(
            paths["selfcheck"], "selfcheck")["kernel"].ne("not run").any():
        print("self-check: could not be decided (a calibration kernel has fewer than 3 "
              "usable widths)")
    if paths.dropped:
        total = sum(int(line.split()[0]) for line in paths.dropped)
        print(f"dropped {total} row(s) of runs.csv that cannot be fitted (listed in "
              f"{paths['dropped']}):")
        for line in paths.dropped:
            print(f"  {line}")
    for path in paths.values():
        print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------- plot, report


@_register
def register_plot(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw the figures of a run directory")
    p.add_argument("dir", metavar="DIR", help="run directory (holds runs.csv)")
    p.set_defaults(func=cmd_plot)


def cmd_plot(args: argparse.Namespace) -> int:
    from subquad.analysis.plots import plot_run  # noqa: PLC0415

    written = plot_run(_run_dir(args.dir, fitted=None))
    for path in written or []:
        print(f"wrote {path}")
    if not written:
        print("no figures: the run has no data for any of them")
    return 0


@_register
def register_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the Markdown report of a run directory")
    p.add_argument("dir", metavar="DIR", help="run directory (holds runs.csv, fits.csv)")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from subquad.analysis.report import write_report  # noqa: PLC0415

    print(f"wrote {write_report(_run_dir(args.dir, fitted=None))}")
    return 0


@_register
def register_check(sub: argparse._SubParsersAction) -> None:
    """``subquad check DIR --baseline BASE [--limits FILE]``."""
    p = sub.add_parser(
        "check", help="gate a fitted run: exponent limits, rise over a baseline, slower cells")
    p.add_argument("dir", metavar="DIR", help="fitted run directory (runs.csv, fits.csv)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--baseline", metavar="BASE",
                   help="fitted baseline run directory to compare against")
    g.add_argument("--baselines", metavar="ROOT",
                   help="one baseline per machine under ROOT/<machine>/: seconds are gated "
                   "against this machine's, else against the machine model's prediction")
    g.add_argument("--record-baseline", metavar="ROOT",
                   help="copy the fitted DIR to ROOT/<machine>/ as this machine's baseline")
    p.add_argument("--limits", default=None, metavar="FILE",
                   help="limits TOML (default: the packaged subquad/analysis/limits.toml)")
    p.add_argument("--strict", action="store_true",
                   help="also fail (exit 1) when a check could not be decided (UNDECIDED: too "
                   "few samples, or a baseline from another machine)")
    p.set_defaults(func=cmd_check)


def _print_dropped(run_dir: Path) -> None:
    """The runs.csv rows the loader left out of a run's fits, one line per reason."""
    from subquad.schema import load_runs  # noqa: PLC0415

    lines = load_runs(run_dir / "runs.csv").drop_summary()
    if lines:
        total = sum(int(line.split()[0]) for line in lines)
        print(f"\n{run_dir}: {total} row(s) of runs.csv are not in its fits (listed in "
              f"{run_dir / 'dropped.csv'}):")
        for line in lines:
            print(f"  {line}")


def cmd_check(args: argparse.Namespace) -> int:
    """Run the checks, print the table, return 1 if any failed (or, --strict, is undecided)."""
    from subquad.analysis.check import run_check  # noqa: PLC0415
    from subquad.analysis.gates import format_gates  # noqa: PLC0415

    if args.limits is not None and not Path(args.limits).is_file():
        raise ConfigError("limits", f"{args.limits} does not exist; give a limits TOML or omit "
                          "--limits for the packaged one")
    _run_dir(args.dir, fitted=True)
    if args.record_baseline:
        from subquad.analysis.check import record_baseline  # noqa: PLC0415

        print(f"recorded {record_baseline(args.dir, args.record_baseline)}")
        return 0
    if args.baselines:
        from subquad.analysis.check import run_portable_check  # noqa: PLC0415

        results, note = run_portable_check(args.dir, args.baselines, args.limits)
        print(note)
    else:
        _run_dir(args.baseline, "--baseline", fitted=True)
        results = run_check(args.dir, args.baseline, args.limits)
    print(format_gates(results))
    for where in (args.dir, None if args.baselines else args.baseline):
        if where is not None:
            _print_dropped(Path(where))
    failed = [r for r in results if r.decided and not r.passed]
    undecided = [r for r in results if not r.decided]
    print(f"\n{len(results) - len(failed) - len(undecided)} passed, {len(failed)} failed, "
          f"{len(undecided)} undecided" + (f" (limits: {args.limits})" if args.limits else "")
          + (" (--strict: undecided checks fail)" if args.strict and undecided else ""))
    return 1 if failed or (args.strict and undecided) else 0


# ------------------------------------------------------------------------------- machine model


@_register
def register_calibrate(sub: argparse._SubParsersAction) -> None:
    """``subquad calibrate [--backend] [--dtype] [--threads] --out DIR``."""
    p = sub.add_parser("calibrate", help="measure this machine's constants for the model "
                       "(bandwidth curves, GEMM rates, overheads; about a minute)")
    p.add_argument("--backend", default="numpy", help="numpy (CPU) or cupy (GPU)")
    p.add_argument("--dtype", default="float32", help="float32 or float64")
    p.add_argument("--threads", type=int, default=None,
                   help="BLAS and numba threads (default: all usable cores)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for calibration.json and figures/")
    p.add_argument("--quick", action="store_true",
                   help="smaller grids (seconds, for tests; not for predictions)")
    p.add_argument("--m", type=int, nargs="+", default=None, metavar="M",
                   help="widths of the row-gather probes (default 1024 2048 4096 8192 16384; "
                        "a sweep's probes use its own m grid)")
    p.set_defaults(func=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from subquad.harness.calibrate import run_calibrate  # noqa: PLC0415

    path, cal = run_calibrate(args.out, args.backend, args.dtype, args.threads,
                              quick=args.quick, m_grid=args.m)
    levels = ", ".join(f"L{c['level']} {c['size'] >> 10} KiB" for c in cal["caches"])
    print(f"machine {cal['machine']}: cache levels {levels or 'unknown'}; "
          f"probes took {cal['seconds']:.0f} s")
    print(f"wrote {path}")
    try:
        from subquad.analysis.machine_plots import bandwidth_figure  # noqa: PLC0415
    except ImportError as exc:  # matplotlib missing: the numbers are still written
        print(f"no figure: {exc}")
        return 0
    for f in bandwidth_figure(cal, Path(args.out) / "figures" / f"bandwidth-{cal['machine']}"):
        print(f"wrote {f}")
    return 0


@_register
def register_model(sub: argparse._SubParsersAction) -> None:
    """``subquad model DIR [--calibration FILE]``."""
    p = sub.add_parser("model", help="predict every cell's phases from counted work, bytes and "
                       "the machine's calibration; fit efficiency factors; explain exponents")
    p.add_argument("dir", metavar="DIR", help="run directory (runs.csv with per-phase bytes)")
    p.add_argument("--calibration", metavar="FILE",
                   help="calibration.json of the run's machine (default DIR/calibration.json)")
    p.add_argument("--min-m", type=float, default=None,
                   help="fit factors and exponents from this width (default: the run's "
                   "[fit] min_m)")
    p.set_defaults(func=cmd_model)


def cmd_model(args: argparse.Namespace) -> int:
    from subquad.analysis.model_run import model_run  # noqa: PLC0415
    from subquad.files import read_table  # noqa: PLC0415

    paths = model_run(_run_dir(args.dir), args.calibration, min_m=args.min_m)
    summ = read_table(paths["summary"], "model_summary.csv", keep_default_na=False)
    print(f"{'method':<9} {'widths':<12} {'measured':>9} {'model':>7} {'fitted':>7} "
          f"{'work':>6} {'asympt.':>7}")
    for r in summ.itertuples():
        print(f"{r.method:<9} {r.fit_range:<12} {_num(r.measured_exponent):>9} "
              f"{_num(r.model_exponent):>7} {_num(r.fitted_exponent):>7} "
              f"{_num(r.work_exponent, '.2f'):>6} {_num(r.asymptotic_exponent, '.2f'):>7}")
    model = read_table(paths["model"], "model.csv", keep_default_na=False)
    it = model[model["phase"] == "iteration"]
    for meth, g in it.groupby("method"):
        r = g["ratio"].astype(float)
        print(f"{meth}: predicted / measured iteration seconds {r.min():.2f}..{r.max():.2f} "
              f"over {len(g)} cells")
    for path in paths.values():
        print(f"wrote {path}")
    return 0


@_register
def register_predict(sub: argparse._SubParsersAction) -> None:
    """``subquad predict RUN --calibration OTHER.json``."""
    p = sub.add_parser("predict", help="predict another machine's seconds, exponents, "
                       "crossover and speed-up from this run's counts and its calibration")
    p.add_argument("dir", metavar="RUN", help="run directory (runs.csv with per-phase bytes)")
    p.add_argument("--calibration", required=True, metavar="FILE",
                   help="calibration.json of the machine to predict (a GPU's included)")
    p.add_argument("--machine", default=None,
                   help="machine id inside FILE when it holds several")
    p.add_argument("--compare", metavar="DIR", default=None,
                   help="a run measured on that machine: print measured beside predicted")
    p.add_argument("--out", metavar="FILE", default=None, help="also write the cells as CSV")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from subquad.analysis.model_run import predict_run  # noqa: PLC0415
    from subquad.files import atomic_write_frame  # noqa: PLC0415

    res = predict_run(_run_dir(args.dir), args.calibration, args.machine, args.compare)
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
            line += f" {_num(r.measured, '.4g'):>11} {_num(r.ratio, '.2f'):>6}"
        print(line)
    for r in res["summary"].itertuples():
        meas = getattr(r, "measured_exponent", math.nan)
        cmp = (f" (over m {r.compared_range}: predicted {_num(r.compared_model_exponent)}, "
               f"measured {_num(meas)})") if has else ""
        print(f"{who(r)}: exponent {_num(r.model_exponent)} over m {r.fit_range}{cmp}"
              + f"; counted work {_num(r.work_exponent)}; asymptotic "
              f"{_num(r.asymptotic_exponent)} (m {r.asymptotic_range}, extrapolation)")
    ctx = [c for c in vary if c != "options"]

    def at(r: Any) -> str:
        return "".join(f", {c} = {getattr(r, c):g}" for c in ctx)

    for r in res["crossover"].itertuples():
        print(f"crossover m* = {_num(r.m_star, '.0f')} ({r.kind}) for subquad [{r.sub_options}]"
              f"{at(r)}")
    sp = res["speedup"]
    for r in sp.itertuples():
        print(f"speed-up dense-gn / subquad at m = {r.m:g}{at(r)}: {r.speedup:.2f}x ({r.kind})")
    if args.out:
        print(f"wrote {atomic_write_frame(Path(args.out), cells) or args.out}")
    return 0
