"""The ``subquad`` program (``python -m subquad`` and the console script).

Its first instructions make Ctrl-C and SIGTERM one line and exit 130 / 143 while the command
line loads (``subquad.signals.exit_now``, inlined: nothing is imported before it);
``subquad.cli.main`` then turns them into exceptions it reports the same way.
"""

import os
import signal
import sys


def _exit_now(signum: int, frame: object) -> None:  # noqa: ARG001 - handler signature
    sigint = signum == signal.SIGINT
    os.write(2, b"subquad: interrupted (Ctrl-C)\n" if sigint else
             b"subquad: terminated (SIGTERM)\n")
    os._exit(130 if sigint else 143)


for _sig in (signal.SIGINT, signal.SIGTERM):
    if signal.getsignal(_sig) is not signal.SIG_IGN:  # ignored under nohup: stays ignored
        signal.signal(_sig, _exit_now)

from subquad.cli import main  # noqa: E402 - after the handlers

if __name__ == "__main__":
    sys.exit(main())
