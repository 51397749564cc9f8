"""One progress line per cell with an ETA from the cost of finished cells and a cost model."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TextIO

from subquad.harness.config import Cell, Timing


def cost_weight(cell: Cell) -> float:
    """Relative cost of a cell: init L m^2 plus iterations L n m^2 (dense) or L n m^(2-c)."""
    m, n, L = float(cell.m), float(cell.n), float(cell.L)
    if cell.method == "calib-axpy":
        return m
    if cell.method == "calib-gemv":
        return m * m
    per_iter = m * m if cell.method.startswith("dense") else m ** (2.0 - cell.c)
    return L * (m * m + n * per_iter)


def fmt_eta(seconds: float | None) -> str:
    """mm:ss (minutes may exceed 59); ``--:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "--:--"
    s = int(round(max(seconds, 0.0)))
    return f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """Prints ``[k/N] method=... m=... n=... -> status (x s) ETA mm:ss`` to stderr."""

    def __init__(self, total: int, timing: Timing, enabled: bool = True,
                 stream: TextIO | None = None):
        self.total, self.enabled = total, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.floor = (timing.warmup + timing.samples) * timing.min_sample_seconds
        self.rates: dict[str, list[float]] = {}
        self.k = 0

    def observe(self, cell: Cell, seconds: float) -> None:
        """Learn seconds per unit of cost weight from a cell that really ran."""
        rate = max(seconds - self.floor, 0.0) / cost_weight(cell)
        self.rates.setdefault(cell.method, []).append(rate)

    def estimate(self, cell: Cell) -> float | None:
        """Seconds a cell should take: the floor plus its method's recent rate times weight."""
        rates = self.rates.get(cell.method)
        if not rates and not cell.is_calibration:  # dense and subquad share the weight's units
            rates = [r for f, rs in self.rates.items() if not f.startswith("calib") for r in rs]
        if not rates:
            return None if not cell.is_calibration else self.floor
        return self.floor + statistics.median(rates[-3:]) * cost_weight(cell)

    def eta(self, remaining: Iterable[Cell]) -> float | None:
        estimates = [self.estimate(cell) for cell in remaining]
        return None if None in estimates else sum(estimates, 0.0)

    def line(self, cell: Cell, outcome: str, seconds: float | None,
             remaining: Iterable[Cell]) -> None:
        """Report one finished (or skipped) cell."""
        self.k += 1
        if not self.enabled:
            return
        took = f" ({seconds:.1f} s)" if seconds is not None else ""
        print(f"[{self.k}/{self.total}] {cell.describe()} -> {outcome}{took} "
              f"ETA {fmt_eta(self.eta(remaining))}", file=self.stream, flush=True)

    def note(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        """A problem the user must see even with ``--quiet`` (e.g. a damaged cell file)."""
        print(f"subquad: warning: {text}", file=self.stream, flush=True)

    def removed(self, run_dir: Path, paths: list[Path], why: str) -> None:
        """Files the sweep removed, named relative to the run directory (even with --quiet)."""
        if paths:
            names = ", ".join(str(p.relative_to(run_dir)) for p in paths)
            print(f"subquad: removed from {run_dir}: {names} ({why})", file=self.stream,
                  flush=True)
