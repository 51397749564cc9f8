"""What every stand-alone experiment script writes beside its table: the environment and command."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from subquad.files import atomic_write_frame, atomic_write_json, atomic_write_text
from subquad.harness.environment import collect_environment


def record(out: Path, name: str, df: pd.DataFrame) -> tuple[dict, str]:
    """Write ``df`` as ``out/name`` with environment.json and command.txt; return both."""
    out.mkdir(parents=True, exist_ok=True)
    env = collect_environment()
    command = " ".join(["python", *sys.argv])
    atomic_write_frame(out / name, df)
    atomic_write_json(out / "environment.json", env)
    atomic_write_text(out / "command.txt", command + "\n")
    return env, command
