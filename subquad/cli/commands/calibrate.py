"""``subquad calibrate``: this machine's constants for the machine model."""

from __future__ import annotations

import argparse
from pathlib import Path

from subquad.cli.common import command
from subquad.cli.present import wrote


def register(sub: argparse._SubParsersAction) -> None:
    """``subquad calibrate [--backend] [--dtype] [--threads] --out DIR``."""
    p = command(sub, "calibrate", run, help="measure this machine's constants for the model "
                "(bandwidth curves, GEMM rates, overheads; about a minute)")
    p.add_argument("--backend", default="numpy", help="numpy (CPU) or cupy (GPU)")
    p.add_argument("--dtype", default="float32", help="float32 or float64")
    p.add_argument("--threads", type=int, help="BLAS and numba threads (default: all usable cores)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="directory for calibration.json and figures/")
    p.add_argument("--quick", action="store_true",
                   help="smaller grids (seconds, for tests; not for predictions)")
    p.add_argument("--m", type=int, nargs="+", metavar="M",
                   help="widths of the row-gather probes (default 1024 2048 4096 8192 16384; "
                        "a sweep's probes use its own m grid)")


def run(args: argparse.Namespace) -> int:
    from subquad.harness.calibrate import run_calibrate  # noqa: PLC0415 (on use)

    path, cal = run_calibrate(args.out, args.backend, args.dtype, args.threads,
                              quick=args.quick, m_grid=args.m)
    levels = ", ".join(f"L{c['level']} {c['size'] >> 10} KiB" for c in cal["caches"])
    print(f"machine {cal['machine']}: cache levels {levels or 'unknown'}; "
          f"probes took {cal['seconds']:.0f} s")
    wrote([path])
    try:
        from subquad.analysis.perfmodel.plots import bandwidth_figure  # noqa: PLC0415
    except ImportError as exc:  # matplotlib missing: the numbers are still written
        print(f"no figure: {exc}")
        return 0
    wrote(bandwidth_figure(cal, Path(args.out) / "figures" / f"bandwidth-{cal['machine']}"))
    return 0
