"""What the commands print: numbers, table lines, written files and dropped rows.

The one presentation layer of the command line; commands compute through the library.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from subquad.results.format import fmt_number


def num(x: Any, fmt: str = ".3f") -> str:
    """A number for a table line, '-' when missing (the results' one formatter)."""
    return fmt_number(x, fmt, "-")


def first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def wrote(paths: Iterable[Path | str]) -> None:
    for path in paths:
        print(f"wrote {path}")


def dropped(counts: dict[str, int], header: str) -> None:
    """The runs.csv rows the loader left out, one line per reason, under ``header`` (which
    gets the total); nothing when none was left out."""
    if counts:
        print(header.format(total=sum(counts.values())))
        for reason, n in counts.items():
            print(f"  {n} row{'s' if n != 1 else ''}: {reason}")
