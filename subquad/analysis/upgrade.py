"""``subquad upgrade``'s step: a run directory measured in results schema 1 rewritten in the
current schema (as asv's ``update``); ``subquad fit`` takes it first when it is needed.

It sits above the harness because the variant columns come from the experiment's cells.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from subquad.errors import ConfigError
from subquad.harness.config import expand_cells, load_experiment
from subquad.harness.measure import variant_columns
from subquad.results.format import fmt_number
from subquad.results.rundir import RunDir
from subquad.results.schema import SCHEMA_VERSION, TABLES, VERSION_COLUMN, refresh_hint


def needs_upgrade(rd: RunDir) -> bool:
    """True when a measured table of the run is in results schema 1."""
    return any(rd.has(name) and rd.version(name) == 1 for name in ("runs", "training"))


def upgrade(rd: RunDir) -> list[Path]:
    """Rewrite runs.csv and training.csv of schema 1 in the current schema; the paths."""
    return [rd.write_table(name, migrate_measured(rd.raw(name), rd.path, name))
            for name in ("runs", "training") if rd.has(name) and rd.version(name) == 1]


def migrate_measured(raw: pd.DataFrame, run_dir: Path, name: str) -> pd.DataFrame:
    """Schema 1 -> 2 of runs.csv / training.csv: add the variant columns.

    Schema 1 recorded only solver, update and rank_max. The other variant columns (label, lr,
    damping, forward_kernel, sketch_size, cg_tol, the resolved update) are derived from the
    run's copied ``experiment.toml``: each row's ``cell`` id is the id of one cell it expands
    to, whose options are exact; ``update=auto`` resolves by the rule of that time (rowdense or
    scatter by Q(beta); the fused update came later). ``forward_kernel_resolved`` was never
    recorded and stays empty.
    A run without its experiment file, or with cells the file does not expand to, is refused.
    """
    toml = Path(run_dir) / "experiment.toml"
    hint = refresh_hint(name, Path(run_dir))
    if not toml.is_file():
        raise ConfigError(f"{name}.csv", f"{run_dir}/{name}.csv is in results schema 1 and "
                          f"there is no experiment.toml to migrate it from; {hint}")
    cells = {c.base_id: c for c in expand_cells(load_experiment(toml))}
    unknown = sorted(set(raw["cell"]) - set(cells))
    if unknown:
        raise ConfigError(f"{name}.csv", f"{len(unknown)} cell(s) of {run_dir}/{name}.csv "
                          f"(e.g. {unknown[0]}) are not cells of its experiment.toml; {hint}")
    cols = {cid: variant_columns(cells[cid], legacy=True) for cid in set(raw["cell"])}
    out = raw.copy()
    names = {k for c in cols.values() for k in c} & set(TABLES[name].columns)
    for col in sorted(names):
        out[col] = [fmt_number(cols[cid].get(col, "")) for cid in raw["cell"]]
    out[VERSION_COLUMN] = SCHEMA_VERSION
    return out


