"""Numbers and the ``options`` / ``context`` strings of the result tables: built, parsed and
labelled in one place, so a table, a figure and a report always spell a value alike."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from subquad.model.methods import default_lr, method_options
from subquad.vocabulary import CALIBRATION, OPTION_KEYS


def fmt_number(v: object, spec: str = "", missing: str = "") -> str:
    """The one number formatter: integers without '.0', others ``spec`` (default 6
    significant digits); None and NaN give ``missing``; text is returned as it is."""
    if v is None or isinstance(v, bool):
        return missing if v is None else str(v)
    if isinstance(v, str):  # text is never parsed: the status "nan" stays "nan"
        return v or missing
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(v) if str(v) else missing
    if math.isnan(f):
        return missing
    if spec:
        return format(f, spec)
    if math.isinf(f):
        return "inf" if f > 0 else "-inf"
    return str(int(f)) if f.is_integer() and abs(f) < 1e15 else f"{f:.6g}"


def fmt_seconds(seconds: float) -> str:
    """'1.23 s', '45.6 ms' or '789 us' ('-' when not finite)."""
    if seconds is None or not np.isfinite(seconds):
        return "-"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} us"


def context_string(values: Mapping[str, object]) -> str:
    """``k=v;...`` of the given values in order, leaving out missing ones."""
    return ";".join(f"{k}={fmt_number(v)}" for k, v in values.items() if fmt_number(v) != "")


def parse_context(text: object) -> dict[str, str]:
    """The inverse of ``context_string`` (also parses ``options`` strings); values as text."""
    return dict(item.split("=", 1) for item in str(text or "").split(";") if "=" in item)


def same_value(a: object, b: object) -> bool:
    """Equality that treats 16, 16.0 and '16' alike."""
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)  # type: ignore
    except (TypeError, ValueError):
        return str(a) == str(b)


def context_matches(context: str, fixed: Mapping[str, object]) -> bool:
    """True when every key the context string and ``fixed`` share has the same value."""
    return all(same_value(v, fixed[k]) for k, v in parse_context(context).items() if k in fixed)


def options_string(values: Mapping[str, object]) -> str:
    """The canonical ``options`` string of a variant: ``key=value`` of OPTION_KEYS that apply.

    Calibration kernels have none. Dense methods have solver, lr, damping; subquad adds update,
    rank_max and forward_kernel; sketch_size and cg_tol appear only for CG solvers.
    """
    method = str(values.get("method", ""))
    if method in CALIBRATION:
        return ""
    keys = list(method_options(method) or ())
    if not keys:  # a table without its method: the sparse keys when it names an update
        keys = ["solver", "update", "rank_max", "forward_kernel", "lr", "damping"] \
            if values.get("update") else ["solver", "lr", "damping"]
    if str(values.get("solver", "")).startswith("pcg"):
        keys += ["sketch_size", "cg_tol"]
    return context_string({k: values.get(k) for k in OPTION_KEYS if k in keys})


def options_label(options: str, method: str = "") -> str:
    """Short human label of an options string: solver, update, and what is not a default."""
    o = parse_context(options)
    lr = default_lr(method)
    if lr is not None and o.get("lr") and same_value(o["lr"], lr):
        o.pop("lr")
    if o.get("damping") and same_value(o["damping"], 0):
        o.pop("damping")
    parts = [o[k] for k in ("solver", "update") if o.get(k)]
    if o.get("update") == "lazy" and o.get("rank_max") not in (None, "", "0"):
        parts[-1] = f"lazy r={o['rank_max']}"
    if o.get("forward_kernel") not in (None, "", "auto"):
        parts.append(o["forward_kernel"])
    parts += [f"{k}={o[k]}" for k in ("lr", "damping", "sketch_size", "cg_tol")
              if o.get(k) not in (None, "")]
    return ", ".join(parts)


def series_label(method: str, options: str, label: str = "") -> str:
    """'fast (cholesky, scatter, lr=1)', or 'dense-gn (lr=1)' when the label is the method."""
    short = options_label(options, method)
    name = label if label and label != method else method
    return f"{name} ({short})" if short else name
