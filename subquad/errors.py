"""Errors with messages a researcher can act on: each names the parameter and what is accepted."""

from __future__ import annotations


class SubquadError(Exception):
    """Base class of every error subquad raises on purpose."""


class ConfigError(SubquadError, ValueError):
    """A parameter outside its accepted range; raised before any allocation."""

    def __init__(self, param: str, message: str):
        self.param = param
        super().__init__(f"{param}: {message}")


def check_choice(param: str, value: object, accepted: tuple, noun: str | None = None) -> None:
    """Raise ConfigError naming ``param`` unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        raise ConfigError(param, f"unknown {noun or param} {value!r}; accepted: "
                          f"{', '.join(map(str, accepted))}")


class SingularGramError(SubquadError):
    """The Gram matrix K (+ mu I) is singular, so a Gauss-Newton step is undefined."""


class ConvergenceError(SubquadError):
    """An iterative solver did not reach its tolerance within its iteration limit."""


class DivergenceError(SubquadError):
    """Training produced a non-finite loss or weights."""


class Terminated(BaseException):
    """SIGTERM arrived; raised by the CLI's signal handler (a BaseException, like Ctrl-C)."""


class Interrupted(SubquadError):
    """A sweep stopped by Ctrl-C or SIGTERM; the message says what is done and how to resume."""

    def __init__(self, message: str, exit_code: int):
        self.exit_code = exit_code
        super().__init__(message)


class CorruptFileError(SubquadError):
    """A result file that is truncated or damaged (its checksum does not match its content)."""


class WriteError(SubquadError):
    """A file could not be written (full disk, read-only, permissions): names the file, what
    was kept and the command that continues."""

    def __init__(self, exc: OSError, kept: str, command: str):
        super().__init__(f"cannot write {exc.filename or 'a file'}: {exc.strerror or exc}; "
                         f"{kept}; continue with: {command}")
