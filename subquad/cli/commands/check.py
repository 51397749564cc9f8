"""``subquad check``: gate a fitted run (limits, rises over a baseline, slower cells)."""

from __future__ import annotations

import argparse
from pathlib import Path

from subquad.cli.common import command
from subquad.cli.present import dropped
from subquad.errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    """``subquad check DIR --baseline BASE [--limits FILE]``."""
    p = command(sub, "check", run, "fitted run directory (runs.csv, fits.csv)",
                help="gate a fitted run: exponent limits, rise over a baseline, slower cells")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--baseline", metavar="BASE",
                   help="fitted baseline run directory to compare against")
    g.add_argument("--baselines", metavar="ROOT",
                   help="one baseline per machine under ROOT/<machine>/: seconds are gated "
                   "against this machine's, else against the machine model's prediction")
    g.add_argument("--record-baseline", metavar="ROOT",
                   help="copy the fitted DIR to ROOT/<machine>/ as this machine's baseline")
    p.add_argument("--limits", metavar="FILE",
                   help="limits TOML (default: the packaged subquad/analysis/limits.toml)")
    p.add_argument("--strict", action="store_true",
                   help="also fail (exit 1) when a check could not be decided (UNDECIDED: too "
                   "few samples, or a baseline from another machine)")


def run(args: argparse.Namespace) -> int:
    """Run the checks, print the table, return 1 if any failed (or, --strict, is undecided)."""
    from subquad.analysis.check import record_baseline, run_check, run_portable_check  # noqa: PLC0415 (on use)
    from subquad.analysis.gates import format_gates  # noqa: PLC0415 (on use)
    from subquad.results.rundir import RunDir  # noqa: PLC0415 (on use)

    if args.limits is not None and not Path(args.limits).is_file():
        raise ConfigError("limits", f"{args.limits} does not exist; give a limits TOML or omit "
                          "--limits for the packaged one")
    rd = RunDir.load(args.dir, fitted=True)
    if args.record_baseline:
        print(f"recorded {record_baseline(rd, args.record_baseline)}")
        return 0
    if args.baselines:
        results, note = run_portable_check(rd, args.baselines, args.limits)
        print(note)
        shown = [rd]
    else:
        base = RunDir.load(args.baseline, "--baseline", fitted=True)
        results = run_check(rd, base, args.limits)
        shown = [rd, base]
    print(format_gates(results))
    for where in shown:
        dropped(where.runs().drop_counts(), f"\n{where.path}: {{total}} row(s) of runs.csv "
                f"are not in its fits (listed in {where.file('dropped')}):")
    failed = [r for r in results if r.decided and not r.passed]
    undecided = [r for r in results if not r.decided]
    print(f"\n{len(results) - len(failed) - len(undecided)} passed, {len(failed)} failed, "
          f"{len(undecided)} undecided" + (f" (limits: {args.limits})" if args.limits else "")
          + (" (--strict: undecided checks fail)" if args.strict and undecided else ""))
    return 1 if failed or (args.strict and undecided) else 0
