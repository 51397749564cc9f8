"""Registration of the subcommands that live outside cli.py (sweep, fit, plot, report, check)."""

from __future__ import annotations

REGISTER: list = []
