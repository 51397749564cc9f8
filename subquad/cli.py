"""Command line: ``subquad train | sweep | fit | plot | report | check``.

Bad input exits with status 2 and one line naming the parameter; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence

from subquad.errors import ConfigError, SingularGramError, SubquadError

EXIT_USAGE = 2


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
    p.add_argument("--cg-maxiter", type=int, default=100, help="PCG: iteration limit")
    p.add_argument("--forward-kernel", default="auto", help="auto, per-example, input-major")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from subquad.model.data import default_d  # noqa: PLC0415
    from subquad.model.train import TrainConfig, run_training  # noqa: PLC0415

    d = args.d if args.d is not None else default_d(args.data)
    cfg = TrainConfig(
        method=args.method, m=args.m, n=args.n, d=d, L=args.L, c=args.c, iters=args.iters,
        seed=args.seed, dtype=args.dtype, backend=args.backend, data=args.data,
        labels=args.labels, threshold=args.threshold, lr=args.lr, damping=args.damping,
        solver=args.solver, update=args.update, rank_max=args.rank_max,
        rank_exponent=args.rank_exponent, sketch_size=args.sketch_size, cg_tol=args.cg_tol,
        cg_maxiter=args.cg_maxiter, forward_kernel=args.forward_kernel)
    cfg.validate()
    printer = None if args.json else _table_printer(cfg.L)
    with warnings.catch_warnings():
        if args.json:
            warnings.simplefilter("default")
        result = run_training(cfg, on_step=printer)
    if args.json:
        json.dump(result, sys.stdout, default=float)
        sys.stdout.write("\n")
    else:
        print(f"init: {result['init_seconds']:.4f} s  loss0 {result['loss'][0]:.4e}  "
              f"expected active fraction Q(beta) = {result['expected_active_fraction']:.4f}")
        print("chosen:", {k: v for k, v in result["config"].items()
                          if k in ("solver", "update", "forward_kernel", "rank_max")})
    return 0


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



def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"subquad: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SingularGramError as exc:
        print(f"subquad: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SubquadError as exc:
        print(f"subquad: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
