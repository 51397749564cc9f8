"""Every family of claims, in the order of ``claims.csv``: the one module that imports the
families (each registers itself with the engine on import) and writes the table."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from subquad.analysis.claims import axes, paper
from subquad.analysis.claims.engine import Scope, claims_frame, evaluate
from subquad.analysis.limits import Limits
from subquad.analysis.rundata import RunData, context_title
from subquad.results.rundir import RunDir

#: the families of claims.csv, in its row order
FAMILIES = (paper.FAMILY, axes.FAMILY)


def scope_text(scope: Scope | None) -> str:
    """'the longest width sweep (n=16, ...), subquad `...`' for the report."""
    if scope is None or scope.fixed is None:
        return ""
    machine = scope.fixed.get("machine")
    return (f"Measured on the longest width sweep ({context_title(scope.fixed, ('m',))}"
            f"{'; machine ' + str(machine) if machine else ''}), subquad configuration "
            f"`{scope.options.get('subquad') or 'default'}`, dense-gn "
            f"`{scope.options.get('dense-gn') or '-'}`. ")


def write_claims(run_dir: RunDir | Path, data: RunData, limits: Limits | None = None
                 ) -> tuple[Scope | None, pd.DataFrame]:
    """Evaluate the claims of a loaded run and write ``claims.csv`` (with the axis family's
    ``axis_claims.csv`` and ``.md``: derived as one set); the scope is None when the run has no
    main width sweep."""
    scope, rows = evaluate(data, FAMILIES, limits)
    frame = claims_frame(rows)
    RunDir.of(run_dir).write_table("claims", frame)
    axes.write_axis_claims(run_dir, data, limits)
    return (scope if scope.fixed is not None else None), frame
