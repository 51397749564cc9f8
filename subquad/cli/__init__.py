"""Command line: ``subquad <command>``, one module per command in ``cli/commands/``.

A command module defines ``register(subparsers)`` (its parser, with ``func`` set) and is found
by its presence in that package: adding a command is adding a module.

Exit statuses: 0 success; 2 a user's mistake (one line naming the parameter, file, key or
environment variable and what is accepted); 1 a failure that is not the user's (a failed run, a
full disk, or an internal error: one line plus the path of a log holding the traceback, see
``crash_log_dir``); 130 Ctrl-C; 143 SIGTERM. No traceback ever reaches the terminal.

Signals are handled from the program's first line (``subquad/__main__.py``); ``main`` checks
the environment before ``cli/parser.py`` loads numpy, scipy, numba and matplotlib (half a
second or more), then turns signals into exceptions the command can clean up after.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import tempfile
import traceback
import warnings
from collections.abc import Sequence
from pathlib import Path

from subquad import signals
from subquad.environ import check_environment
from subquad.errors import ConfigError, Interrupted, SingularGramError, SubquadError, Terminated
from subquad.files import atomic_write_text

EXIT_USAGE = 2
EXIT_FAILED = 1


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


def _format_warning(message, category, filename, lineno, line=None) -> str:  # noqa: ARG001
    """Warnings as one line (``subquad: warning: ...``), not file:line plus a source line."""
    return f"subquad: warning: {_one_line(message)}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; map every outcome to an exit status and at most one stderr line."""
    previous: dict = {}
    format_warning, warnings.formatwarning = warnings.formatwarning, _format_warning
    try:
        check_environment()
        # numpy, scipy, numba and matplotlib load here (not for a cycle): a signal meanwhile
        # exits at once in the program (subquad/__main__.py); an exception could pass through
        # a library's C code, whose interpreter then ends by SIGINT instead of exit 130
        from subquad.cli.parser import build_parser, dispatch  # noqa: PLC0415

        parser = build_parser()
        previous = signals.install(signals.raise_signal)
        status = dispatch(parser, argv)  # argparse's own usage errors exit 2 (SystemExit)
        signals.check()  # a signal swallowed after the command's last step still counts
        return status
    except Interrupted as exc:
        print(f"subquad: {exc}", file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, Terminated) as exc:
        code, what = signals.EXIT[signal.SIGINT if isinstance(exc, KeyboardInterrupt)
                                  else signal.SIGTERM]
        print(f"subquad: {what}", file=sys.stderr)
        return code
    except SubquadError as exc:
        print(f"subquad: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, (ConfigError, SingularGramError)) else EXIT_FAILED
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
        signals.uninstall(previous)


if __name__ == "__main__":
    sys.exit(main())
