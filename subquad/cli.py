"""Command line: ``subquad train | sweep | fit | plot | report | check``.

Exit statuses: 0 success; 2 a user's mistake (one line naming the parameter, file or key and
what is accepted); 1 a failure that is not the user's (a failed run, a full disk, or an internal
error: one line plus the path of a log holding the traceback, see ``crash_log_dir``);
130 Ctrl-C; 143 SIGTERM. No traceback ever reaches the terminal.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import sys
import tempfile
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from subquad.errors import ConfigError, Interrupted, SingularGramError, SubquadError, Terminated

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


def _train_parser(sub: argparse._SubParsersAction) -> None:
    from subquad.model.data import DATASETS, LABELS  # noqa: PLC0415
    from subquad.model.train import METHODS  # noqa: PLC0415

    p = sub.add_parser("train", help="train one network and report loss, sparsity, time, work")
    p.add_argument("--method", default="subquad", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--m", type=int, default=1024, help="width m (neurons per layer)")
    p.add_argument("--n", type=int, default=8, help="training samples n")
    p.add_argument("--d", type=int, default=None,
                   help="input dimension d (synthetic: 16; a real set needs its own: digits 64, "
                   "breast-cancer 30, wine 13, iris 4, diabetes 10)")
    p.add_argument("--L", type=int, default=2, help="trained layers L")
    p.add_argument("--c", type=float, default=0.2, help="sparsity exponent c in (0, 0.5]")
    p.add_argument("--iters", type=int, default=10, help="iterations T")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float64", help="float32 or float64")
    p.add_argument("--backend", default="numpy", help="numpy or cupy")
    p.add_argument("--data", default="synthetic", help=f"one of {', '.join(DATASETS)}")
    p.add_argument("--labels", default="teacher", help=f"synthetic labels: {', '.join(LABELS)}")
    p.add_argument("--threshold", default="adaptive", help="adaptive (default) or fixed")
    p.add_argument("--lr", type=float, default=None,
                   help="step size eta (default 1 for Gauss-Newton, 1e-3 for dense-gd)")
    p.add_argument("--damping", type=float, default=0.0, help="damping mu >= 0")
    p.add_argument("--solver", default="auto",
                   help="auto, cholesky, cg (no preconditioner), pcg-tensorsketch, pcg-tensorsrht")
    p.add_argument("--update", default="auto",
                   help="subquad: auto, scatter, rowdense, lazy, fused (CPU)")
    p.add_argument("--rank-max", type=int, default=None, help="lazy: fold when rank passes this")
    p.add_argument("--rank-exponent", type=float, default=None,
                   help="lazy: rank-max = m^a (a in (0, 1])")
    p.add_argument("--sketch-size", type=int, default=None, help="PCG: sketch rows k per layer")
    p.add_argument("--cg-tol", type=float, default=None,
                   help="CG: relative residual target (1e-10 float64, 1e-5 float32)")
    p.add_argument("--cg-maxiter", type=int, default=None,
                   help="CG/PCG: iteration limit (default 100)")
    p.add_argument("--forward-kernel", default="auto", help="auto, per-example, input-major")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    """Train once; with ``--json`` print one JSON object even when the run fails."""
    from subquad.model.data import default_d  # noqa: PLC0415
    from subquad.model.train import TrainConfig, run_training  # noqa: PLC0415

    d = args.d if args.d is not None else default_d(args.data)
    try:
        cfg = TrainConfig(
            method=args.method, m=args.m, n=args.n, d=d, L=args.L, c=args.c, iters=args.iters,
            seed=args.seed, dtype=args.dtype, backend=args.backend, data=args.data,
            labels=args.labels, threshold=args.threshold, lr=args.lr, damping=args.damping,
            solver=args.solver, update=args.update, rank_max=args.rank_max,
            rank_exponent=args.rank_exponent, sketch_size=args.sketch_size, cg_tol=args.cg_tol,
            cg_maxiter=args.cg_maxiter, forward_kernel=args.forward_kernel)
        cfg.validate()
        printer = None if args.json else _table_printer(cfg.L)
        result = run_training(cfg, on_step=printer)
    except SubquadError as exc:
        if args.json:
            _print_json(_failure_record(args.method, exc))
        raise
    if args.json:
        _print_json({**result, "status": "ok", "message": ""})
    else:
        print(f"init: {result['init_seconds']:.4f} s  loss0 {result['loss'][0]:.4e}  "
              f"expected active fraction Q(beta) = {result['expected_active_fraction']:.4f}")
        print("chosen:", {k: v for k, v in result["config"].items()
                          if k in ("solver", "update", "forward_kernel", "rank_max")})
    return 0


def _failure_record(method: str, exc: SubquadError) -> dict:
    """The trajectory so far (``exc.partial``, set by run_training), status and message."""
    from subquad.harness.measure import classify  # noqa: PLC0415

    status = "invalid" if isinstance(exc, ConfigError) else classify(exc)
    partial = getattr(exc, "partial", None) or {"method": method, "loss": []}
    return {**partial, "status": status, "message": str(exc)}


def _print_json(obj: dict) -> None:
    json.dump(obj, sys.stdout, default=float)
    sys.stdout.write("\n")
    sys.stdout.flush()


def _table_printer(L: int):
    from subquad.model.trainer import PHASES  # noqa: PLC0415

    head = (f"{'iter':>4} {'loss':>11} " + " ".join(f"{'act' + str(i):>7}" for i in range(L + 1))
            + " " + " ".join(f"{p:>9}" for p in PHASES))
    print(head)

    def show(t, st) -> None:
        print(f"{t:>4} {st.loss:>11.4e} " + " ".join(f"{a:>7.4f}" for a in st.active_fraction)
              + " " + " ".join(f"{st.seconds[p]:>9.5f}" for p in PHASES), flush=True)

    return show


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subquad", description="Empirical complexity verification of subquadratic "
        "training of wide networks (Song, Zhang, Zhang, arXiv 2112.07628).")
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub)
    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list:
    """Subcommands living in their own modules (sweep, fit, plot, report, check)."""
    from . import commands  # noqa: PLC0415

    return commands.REGISTER



def crash_log_dir() -> Path:
    """Where internal-error tracebacks go: ``$XDG_CACHE_HOME/subquad`` (``~/.cache/subquad``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "subquad"


def _write_crash_log(argv: Sequence[str] | None) -> Path | None:
    """The current exception's traceback (and the command line) into a fresh log file."""
    from subquad.files import atomic_write_text  # noqa: PLC0415

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    text = (f"subquad {' '.join(sys.argv[1:] if argv is None else argv)}\n"
            f"{traceback.format_exc()}")
    for folder in (crash_log_dir(), Path(tempfile.gettempdir()) / "subquad"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            return atomic_write_text(folder / f"crash-{stamp}-{os.getpid()}.log", text)
        except OSError:
            continue
    return None


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _on_sigterm(signum, frame) -> None:  # noqa: ARG001 - signal handler signature
    raise Terminated()


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001
    """Warnings as one line (``subquad: warning: ...``), not file:line plus a source line."""
    return f"subquad: warning: {_one_line(message)}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; map every outcome to an exit status and at most one stderr line."""
    import numpy as np  # noqa: PLC0415

    parser = build_parser()
    args = parser.parse_args(argv)  # argparse's own usage errors exit 2
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a worker thread)
        pass
    format_warning, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        # a diverging run is reported by its non-finite check, not by raw numpy warnings
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return int(args.func(args) or 0)
    except Interrupted as exc:
        print(f"subquad: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("subquad: interrupted (Ctrl-C)", file=sys.stderr)
        return EXIT_SIGINT
    except Terminated:
        print("subquad: terminated (SIGTERM)", file=sys.stderr)
        return EXIT_SIGTERM
    except (ConfigError, SingularGramError) as exc:
        print(f"subquad: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except SubquadError as exc:
        print(f"subquad: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # a full disk, a vanished directory, permissions
        where = f" {exc.filename}" if exc.filename else ""
        print(f"subquad: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        log = _write_crash_log(argv)
        where = f"traceback in {log}" if log else "no log could be written"
        print(f"subquad: internal error: {type(exc).__name__}: {_one_line(exc)[:300]} "
              f"({where}; please report it)", file=sys.stderr)
        return EXIT_FAILED
    finally:
        warnings.formatwarning = format_warning
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
