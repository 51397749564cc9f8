"""Command line: ``subquad <command>``, one module per command in ``cli/commands/``.

A command module defines ``register(subparsers)`` (its parser, with ``func`` set) and is found
by its presence in that package: adding a command is adding a module.

Exit statuses: 0 success; 2 a user's mistake (one line naming the parameter, file or key and
what is accepted); 1 a failure that is not the user's (a failed run, a full disk, or an internal
error: one line plus the path of a log holding the traceback, see ``crash_log_dir``);
130 Ctrl-C; 143 SIGTERM. No traceback ever reaches the terminal.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import os
import pkgutil
import signal
import sys
import tempfile
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from subquad.cli import commands
from subquad.errors import ConfigError, Interrupted, SingularGramError, SubquadError, Terminated
from subquad.files import atomic_write_text

EXIT_USAGE = 2
EXIT_FAILED = 1
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


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
    return [importlib.import_module(f"{commands.__name__}.{name}") for name in names]


def crash_log_dir() -> Path:
    """Where internal-error tracebacks go: ``$XDG_CACHE_HOME/subquad`` (``~/.cache/subquad``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "subquad"


def _write_crash_log(argv: Sequence[str] | None) -> Path | None:
    """The current exception's traceback (and the command line) into a fresh log file."""
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
