"""runs.csv typed and validated: the usable rows, and those dropped with their reason.

The loader never hides data: a measured row whose ``seconds`` is missing, text, negative, or
zero while work was done, and a second row of one (cell, sample, phase), is returned in
``dropped``, one row per (cell, phase, reason) with
the count, and every consumer prints or renders it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from subquad.results.format import options_string
from subquad.results.schema import TABLES
from subquad.vocabulary import DROP_REASONS, DUPLICATE


@dataclass
class Runs:
    """runs.csv, typed and validated: usable rows, and what was dropped with the reason."""

    frame: pd.DataFrame
    dropped: pd.DataFrame
    #: every row as read (text), after a migration: what ``write_runs`` writes back
    raw: pd.DataFrame | None = None
    migrated: bool = False

    @property
    def ok(self) -> pd.DataFrame:
        return self.frame[self.frame["status"] == "ok"]

    def drop_counts(self) -> dict[str, int]:
        """Rows left out per reason (sorted by reason)."""
        if self.dropped.empty:
            return {}
        by = self.dropped.groupby("reason", sort=True)["rows"].sum()
        return {str(reason): int(n) for reason, n in by.items()}


def _drop_reasons(raw: pd.DataFrame, typed: pd.DataFrame) -> pd.Series:
    """Why each row cannot be used (a measured one: its seconds or m; any: a repeat of its
    cell, sample and phase); '' when it can."""
    text = raw["seconds"].astype(str).str.strip()
    sec, work = typed["seconds"], typed["work"]
    ok = typed["status"] == "ok"
    reason = pd.Series("", index=raw.index, dtype=object)
    *seconds_reasons, bad_m, _ = DROP_REASONS
    seconds_rules = (text == "", (text != "") & sec.isna(),
                     sec.notna() & ~np.isfinite(sec.fillna(0)),
                     text.str.lower().isin(["nan", "-nan"]), sec < 0, (sec == 0) & ~(work == 0))
    for why, rule in zip(seconds_reasons, seconds_rules, strict=True):
        reason[ok & rule] = why  # a later rule overrides an earlier one
    m = typed["m"]
    reason[ok & (reason == "") & ~(np.isfinite(m.fillna(np.nan)) & (m > 0))] = bad_m
    # a second row of one (cell, sample, phase): kept once, never fitted twice
    again = raw.duplicated(["cell", "sample", "phase"]) & (raw["cell"].astype(str) != "")
    reason[again & (reason == "")] = DUPLICATE
    return reason


def _dropped_rows(raw: pd.DataFrame, typed: pd.DataFrame, reason: pd.Series) -> pd.DataFrame:
    """One row per (cell, phase, reason): what was dropped, with an example value and count."""
    bad = reason != ""
    if not bad.any():
        return TABLES["dropped"].typed(pd.DataFrame(columns=TABLES["dropped"].columns))
    d = typed.loc[bad, ["cell", "method", "label", "options", "m", "phase"]].copy()
    d["column"] = np.select([reason[bad].str.startswith("m "), reason[bad] == DUPLICATE],
                            ["m", "sample"], "seconds")
    d["value"] = [str(raw.at[i, c]) for i, c in zip(d.index, d["column"])]
    d["reason"] = reason[bad]
    keys = ["cell", "method", "label", "options", "m", "phase", "column", "reason"]
    out = d.groupby(keys, dropna=False, sort=True).agg(value=("value", "first"),
                                                        rows=("value", "size")).reset_index()
    out.insert(0, "table", "runs.csv")
    return TABLES["dropped"].typed(out)


def validate_runs(raw: pd.DataFrame) -> Runs:
    """Type a runs table (strings kept as read) and split off the rows it cannot use."""
    table = TABLES["runs"]
    raw = raw.assign(**{col: "" for col in table.columns if col not in raw})
    raw = raw.astype(object).where(raw.notna(), "")
    typed = table.typed(raw)
    typed.loc[typed["status"] == "", "status"] = "ok"
    if (typed["options"] == "").all():
        typed["options"] = [options_string(r) for r in typed.to_dict("records")]
    typed.loc[typed["label"] == "", "label"] = typed["method"]
    reason = _drop_reasons(raw, typed)
    return Runs(typed[reason == ""].reset_index(drop=True), _dropped_rows(raw, typed, reason),
                raw)


