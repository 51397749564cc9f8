"""Figures of the machine model: the calibrated bandwidth curves, measured vs predicted seconds.

Both mark the cache levels: on the bandwidth curve at their sizes, on the seconds figure at the
widths where one weight matrix (m^2 itemsize bytes) outgrows each level.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from subquad.files import atomic_savefig

DPI = 150
LEVEL_COLORS = ("tab:green", "tab:orange", "tab:red", "tab:purple")


def _save(fig: Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for ext in ("png", "pdf"):
        path = stem.with_name(f"{stem.name}.{ext}")
        atomic_savefig(fig, path, dpi=DPI if ext == "png" else None)
        out.append(path)
    return out


def bandwidth_figure(cal: dict, stem: Path) -> list[Path]:
    """Streaming, sorted-rows (line) and uniform random bandwidth over the working set."""
    fig = Figure(figsize=(7, 4.2), layout="constrained")
    ax = fig.add_subplot()
    mib = [s / 2**20 for s in cal["stream"]["size"]]
    gb = 1e-9
    ax.plot(mib, [b * gb for b in cal["stream"]["bandwidth"]], "o-", label="streaming read")
    rows = cal.get("random_rows", {})
    if rows:
        ax.plot(mib, [b * gb for b in rows["read_line_bandwidth"]], "s--",
                label="sorted rows, read (line bytes)")
        ax.plot(mib, [b * gb for b in rows["rmw_line_bandwidth"]], "^--",
                label="sorted rows, read-modify-write (line bytes)")
    uni = cal.get("random_uniform", {})
    if uni:
        line = cal.get("line_bytes", 64)
        ax.plot(mib, [line / t * gb for t in uni["seconds_per_access"]], "x:",
                label="uniform random read-modify-write (line bytes)")
    for k, c in enumerate(cal.get("caches", [])):
        ax.axvline(c["size"] / 2**20, color=LEVEL_COLORS[k % 4], lw=1, alpha=0.7)
        ax.text(c["size"] / 2**20, 0.98, f" L{c['level']}", color=LEVEL_COLORS[k % 4],
                transform=ax.get_xaxis_transform(), va="top")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("working set (MiB)")
    ax.set_ylabel("GB/s")
    threads = cal.get("threads") or "all"
    ax.set_title(f"{cal['machine']} ({cal['backend']}, {cal['dtype']}, threads {threads})",
                 fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, stem)


def cache_widths(caches: list[dict], itemsize: int) -> list[tuple[str, float]]:
    """(level, width) where one m x m weight matrix outgrows each cache level."""
    return [(f"L{c['level']}", math.sqrt(c["size"] / itemsize)) for c in caches
            if c.get("size")]


def model_figure(cells: pd.DataFrame, caches: list[dict], itemsize: int, stem: Path
                 ) -> list[Path]:
    """Measured vs predicted (and fitted) iteration seconds over m, one panel per series.

    ``cells`` has one row per (series, m) with ``label``, ``m``, ``measured``, ``predicted``
    and ``fitted`` seconds.
    """
    labels = list(dict.fromkeys(cells["label"]))
    fig = Figure(figsize=(6.5, 3.2 * max(1, len(labels))), layout="constrained")
    for i, label in enumerate(labels):
        ax = fig.add_subplot(len(labels), 1, i + 1)
        d = cells[cells["label"] == label].sort_values("m")
        ax.plot(d["m"], d["measured"], "ko-", label="measured (median)")
        ax.plot(d["m"], d["predicted"], "b--", label="predicted (calibration only)")
        ax.plot(d["m"], d["fitted"], "g:", label="fitted (efficiency factors)")
        for k, (lvl, w) in enumerate(cache_widths(caches, itemsize)):
            if d["m"].min() / 2 <= w <= d["m"].max() * 2:
                ax.axvline(w, color=LEVEL_COLORS[k % 4], lw=1, alpha=0.7)
                ax.text(w, 0.02, f" W > {lvl}", color=LEVEL_COLORS[k % 4], fontsize=7,
                        transform=ax.get_xaxis_transform())
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_ylabel("seconds / iteration")
        ax.set_title(label, fontsize=9)
        ax.legend(fontsize=7)
    fig.axes[-1].set_xlabel("width m")
    return _save(fig, stem)
