"""The parser of every command (one module per command in ``cli/commands/``) and its dispatch.

Imported by ``subquad.cli.main`` after it checked the environment. Each command imports its
heavy modules (numba, the analysis layer) when it runs, so parsing stays under a second.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import pkgutil
from collections.abc import Sequence

import numpy as np

from subquad.cli import commands
from subquad.errors import ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subquad", description="Empirical complexity verification of subquadratic "
        "training of wide networks (Song, Zhang, Zhang, arXiv 2112.07628).")
    parser.add_argument("--version", action="version",
                        version=f"subquad {importlib.metadata.version('subquad')}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in command_modules():
        module.register(sub)
    return parser


def command_modules() -> list:
    """Every module of ``subquad.cli.commands`` (its order of names), imported."""
    names = sorted(info.name for info in pkgutil.iter_modules(commands.__path__)
                   if not info.name.startswith("_"))
    try:
        importlib.import_module("matplotlib")  # it checks $MPLBACKEND, whichever command runs
        return [importlib.import_module(f"{commands.__name__}.{name}") for name in names]
    except ValueError as exc:  # matplotlib refuses a bad $MPLBACKEND while it imports
        if not (os.environ.get("MPLBACKEND") and "backend" in str(exc)):
            raise
        raise ConfigError("$MPLBACKEND", str(exc).removeprefix("Key backend: ")) from None


def dispatch(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv`` (argparse's usage errors exit 2) and run the command it names."""
    args = parser.parse_args(argv)
    # a diverging run is reported by its non-finite check, not by raw numpy warnings
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return int(args.func(args) or 0)
