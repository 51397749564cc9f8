"""``subquad train``: one training run; a table per iteration, or one JSON object."""

from __future__ import annotations

import argparse
import dataclasses
import json

from subquad.cli.common import command
from subquad.errors import ConfigError, SubquadError, Terminated
from subquad.model.data import DATASETS, LABELS, default_d
from subquad.model.methods import method_names
from subquad.vocabulary import ITERATION_PHASES as PHASES


def register(sub: argparse._SubParsersAction) -> None:
    p = command(sub, "train", run, help="train one network and report loss, sparsity, time, work")
    p.add_argument("--method", default="subquad", help=f"one of {', '.join(method_names())}")
    p.add_argument("--m", type=int, default=1024, help="width m (neurons per layer)")
    p.add_argument("--n", type=int, default=8, help="training samples n")
    p.add_argument("--d", type=int,
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
    p.add_argument("--lr", type=float,
                   help="step size eta (default 1 for Gauss-Newton, 1e-3 for dense-gd)")
    p.add_argument("--damping", type=float, default=0.0, help="damping mu >= 0")
    p.add_argument("--solver", default="auto",
                   help="auto, cholesky, cg (no preconditioner), pcg-tensorsketch, pcg-tensorsrht")
    p.add_argument("--update", default="auto",
                   help="subquad: auto, scatter, rowdense, lazy, fused (CPU)")
    p.add_argument("--rank-max", type=int, help="lazy: fold when rank passes this")
    p.add_argument("--rank-exponent", type=float, help="lazy: rank-max = m^a (a in (0, 1])")
    p.add_argument("--sketch-size", type=int, help="PCG: sketch rows k per layer")
    p.add_argument("--cg-tol", type=float,
                   help="CG: relative residual target (1e-10 float64, 1e-5 float32)")
    p.add_argument("--cg-maxiter", type=int, help="CG/PCG: iteration limit (default 100)")
    p.add_argument("--forward-kernel", default="auto", help="auto, per-example, input-major")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def run(args: argparse.Namespace) -> int:
    """Train once; with ``--json`` print one JSON object even when the run fails."""
    from subquad.model import train as training  # noqa: PLC0415 (on use: numba loads)

    d = args.d if args.d is not None else default_d(args.data)
    names = {f.name for f in dataclasses.fields(training.TrainConfig)}
    try:  # every option named like a TrainConfig field is that field
        cfg = training.TrainConfig(**{k: v for k, v in vars(args).items() if k in names} | {"d": d})
        cfg.validate()
        printer = None if args.json else _table_printer(cfg.L)
        result = training.run_training(cfg, on_step=printer)
    except (SubquadError, KeyboardInterrupt, Terminated) as exc:
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


def _failure_record(method: str, exc: BaseException) -> dict:
    """The trajectory so far (``exc.partial``, set by run_training), status and message."""
    from subquad.harness.measure import classify  # noqa: PLC0415 (on use)

    status, message = (("interrupted", "Ctrl-C") if isinstance(exc, KeyboardInterrupt) else
                       ("terminated", "SIGTERM") if isinstance(exc, Terminated) else
                       ("invalid" if isinstance(exc, ConfigError) else classify(exc), str(exc)))
    partial = getattr(exc, "partial", None) or {"method": method, "loss": []}
    return {**partial, "status": status, "message": message}


def _print_json(obj: dict) -> None:
    print(json.dumps(obj, default=float), flush=True)


def _table_printer(L: int):
    print(f"{'iter':>4} {'loss':>11} " + " ".join(f"{'act' + str(i):>7}" for i in range(L + 1))
          + " " + " ".join(f"{p:>9}" for p in PHASES))

    def show(t, st) -> None:
        print(f"{t:>4} {st.loss:>11.4e} " + " ".join(f"{a:>7.4f}" for a in st.active_fraction)
              + " " + " ".join(f"{st.seconds[p]:>9.5f}" for p in PHASES), flush=True)

    return show
