"""Ctrl-C and SIGTERM: one line on stderr and exit 130 / 143, from the program's first line."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from subquad.errors import Terminated

EXIT = {signal.SIGINT: (130, "interrupted (Ctrl-C)"), signal.SIGTERM: (143, "terminated (SIGTERM)")}
_raised: list[int] = []


def exit_now(signum: int, frame: object = None) -> None:  # noqa: ARG001 - handler signature
    """The signal's line, then its exit status at once (while the command line loads)."""
    code, what = EXIT[signum]
    os.write(2, f"subquad: {what}\n".encode())
    os._exit(code)


def raise_signal(signum: int, frame: object) -> None:
    """KeyboardInterrupt or Terminated, so the command stops cleanly; a second signal (the
    first swallowed or the clean-up too slow) exits at once."""
    if _raised:
        exit_now(signum)
    _raised.append(signum)
    raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def check() -> None:
    """Raise again a signal whose exception was swallowed: a handler that ran inside a
    finalizer (``__del__``, e.g. llvmlite's) or a C callback only prints 'Exception ignored'
    and goes on. Loops call this once per step, so one signal always stops the command."""
    if _raised:
        raise KeyboardInterrupt() if _raised[0] == signal.SIGINT else Terminated()


def _quiet_unraisable(unraisable: sys.UnraisableHookArgs) -> None:
    """The interpreter's report of a swallowed exception, except our own signal's (``check``
    raises it again at the next step)."""
    if not isinstance(unraisable.exc_value, (KeyboardInterrupt, Terminated)):
        sys.__unraisablehook__(unraisable)


def install(handler: Callable[[int, object], None]) -> dict:
    """``handler`` for SIGINT and SIGTERM, except where ignored (``nohup``) or outside the main
    thread; returns what it replaced, for ``uninstall``."""
    _raised.clear()
    previous: dict = {"unraisable": sys.unraisablehook}
    sys.unraisablehook = _quiet_unraisable
    for sig in EXIT:
        try:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, handler)
        except ValueError:  # not the main thread
            break
    return previous


def uninstall(previous: dict) -> None:
    """Put back what ``install`` replaced; no signal is pending any more."""
    sys.unraisablehook = previous.pop("unraisable", sys.unraisablehook)
    for sig, handler in previous.items():
        signal.signal(sig, handler)
    _raised.clear()
