"""Experiment files: load and strictly validate a TOML, expand it into cells with stable ids.

Everything is checked before anything runs: unknown keys, axis values, grids, method names and
options, and every expanded cell through ``TrainConfig.validate()`` (which includes the memory
estimate). Errors are ``ConfigError`` naming the file, the key path and the accepted values.
The file format is documented in README.md, section "Sweeps".
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from subquad.errors import ConfigError
from subquad.memory import available_bytes, fmt_bytes
from subquad.model.backend import gpu_available
from subquad.model.data import DATASETS, LABELS, REAL_SETS, default_d, fixed_dimension, load
from subquad.model.methods import method_names
from subquad.model.sparsify import THRESHOLDS
from subquad.model.train import TrainConfig
from subquad.results.cells import IDENTITY_DIGITS
from subquad.vocabulary import BACKENDS, CALIBRATION, DTYPES, EXECUTOR_KINDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

AXES = ("m", "n", "d", "L", "c", "seed")
#: axes along which cost grows, so a censored cell stops the larger values of its series
GROWING_AXES = ("m", "n", "d", "L")
INT_AXES = ("m", "n", "d", "L", "seed")
RATIOS = {2: 2.0, "2": 2.0, "sqrt2": math.sqrt(2.0)}
#: m on a geometric grid is rounded to a multiple of this (1024 sqrt2 -> 1448, not 1448.15)
M_ROUND = 8

TOP_KEYS = ("name", "description", "backend", "dtype", "methods", "fixed", "sweeps",
            "factorial", "timing", "training", "calibration", "executor", "fit")
#: the optional [fit] table: how `subquad fit` windows this experiment's exponents
FIT_KEYS = ("window", "min_m")
FIT_WINDOWS = ("all", "auto")
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "solver": (str,), "update": (str,), "rank_max": (int,), "rank_exponent": (int, float),
    "sketch_size": (int,), "cg_tol": (int, float), "cg_maxiter": (int,), "lr": (int, float),
    "damping": (int, float), "threshold": (str,), "forward_kernel": (str,),
}
METHOD_KEYS = ("method", "label", *OPTION_TYPES)
FIXED_KEYS = ("m", "n", "d", "L", "c", "seed", "seeds", "data", "labels", "threshold", "dtype")
FIXED_DEFAULTS: dict[str, Any] = {"m": 1024, "n": 16, "d": None, "L": 2, "c": 0.2, "seeds": (0,),
                                  "data": "synthetic", "labels": "teacher",
                                  "threshold": "adaptive"}
SWEEP_KEYS = ("axis", "values", "methods", "training", *FIXED_KEYS)
FACTORIAL_KEYS = ("methods", "training", *FIXED_KEYS)
GRID_KEYS = ("start", "stop", "ratio")
TRAINING_KEYS = ("iterations",)
CALIBRATION_KEYS = ("enabled", "m", "probes")
EXECUTOR_KEYS = ("kind", "partition", "time", "gpus_per_task", "cpus_per_task",
                 "array_parallelism", "exclusive", "account", "constraint", "setup")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Timing:
    """How a cell is timed (docs MEASUREMENT.md, "Timing one cell")."""

    warmup: int = 1
    iters: int = 1
    samples: int = 5
    min_sample_seconds: float = 0.05
    max_iters: int = 10_000
    cell_budget_seconds: float = 120.0
    stop_axis_after_censored: bool = True
    threads: int | None = None  # BLAS and numba threads; None = leave the defaults
    #: the grid is run this many times (round-major), samples split among the rounds, so a
    #: cell's samples span the whole run and their spread includes the machine's drift
    rounds: int = 1

    def round_samples(self, index: int) -> range:
        """The sample numbers of round ``index`` (``samples`` split among the rounds)."""
        per_round = -(-self.samples // self.rounds)
        return range(index * per_round, (index + 1) * per_round)


@dataclass(frozen=True)
class Executor:
    """Where cells run: in this process, one local process each, or a Slurm job array."""

    kind: str = "local"
    partition: str | None = None
    time: int | None = None  # minutes
    gpus_per_task: int | None = None
    cpus_per_task: int | None = None
    array_parallelism: int = 16
    exclusive: bool = True
    account: str | None = None
    constraint: str | None = None
    setup: tuple[str, ...] = ()


@dataclass(frozen=True)
class MethodSpec:
    """One trainer (or calibration kernel) with its options, as written in the file."""

    method: str
    label: str
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class Cell:
    """One (method, backend, dtype, m, n, d, L, c, seed, options) to measure.

    ``chains`` (not part of the identity) lists the series this cell sits in as
    (series key, position): a censored cell stops the later positions of its series.
    """

    experiment: str
    method: str
    backend: str
    dtype: str
    m: int
    n: int
    d: int
    L: int
    c: float
    seed: int
    data: str
    labels: str
    threshold: str
    options: tuple[tuple[str, Any], ...] = ()
    training_iters: int = 0
    round: int = 0
    label: str = field(default="", compare=False)
    chains: tuple[tuple[str, int], ...] = field(default=(), compare=False)
    #: the experiment's identity (``expand_cells``): the first digits of the cell file's id
    identity: str = field(default="", compare=False)

    @property
    def cell_id(self) -> str:
        """Stable 16-hex id of the cell file: the experiment's identity (``IDENTITY_DIGITS``),
        then a hash of every parameter that changes what is measured (that hash alone
        without an identity)."""
        keys = [f.name for f in fields(self) if f.compare and f.name != "experiment"
                and not (f.name == "round" and self.round == 0)]
        payload = json.dumps({k: getattr(self, k) for k in keys}, sort_keys=True, default=list)
        digest = hashlib.sha256(payload.encode()).hexdigest()
        prefix = self.identity[:IDENTITY_DIGITS]
        return prefix + digest[:16 - len(prefix)]

    @property
    def base_id(self) -> str:
        """The ``cell`` column of its rows: the parameters' hash, shared by every round and
        independent of the experiment (schema-1 runs and the report match it)."""
        return replace(self, round=0, identity="").cell_id

    @property
    def is_calibration(self) -> bool:
        return self.method in CALIBRATION

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def train_config(self) -> TrainConfig:
        """The ``TrainConfig`` of a trainer cell (options override the fixed threshold)."""
        opts = dict(self.options)
        threshold = opts.pop("threshold", self.threshold)
        return TrainConfig(method=self.method, m=self.m, n=self.n, d=self.d, L=self.L, c=self.c,
                           iters=max(1, self.training_iters), seed=self.seed, dtype=self.dtype,
                           backend=self.backend, data=self.data, labels=self.labels,
                           threshold=threshold, **opts)

    def describe(self) -> str:
        """Short human label for progress lines."""
        text = (f"method={self.label or self.method} m={self.m} n={self.n} d={self.d} "
                f"L={self.L} c={self.c:g} seed={self.seed}")
        threshold = self.option("threshold", self.threshold)
        if threshold != "adaptive":
            text += f" threshold={threshold}"
        text += f" data={self.data}" if self.data != "synthetic" else ""
        return text + (f" round={self.round + 1}" if self.round else "")


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file."""

    path: Path
    name: str
    description: str
    backend: str
    dtype: str
    methods: tuple[MethodSpec, ...]
    fixed: Mapping[str, Any]
    sweeps: tuple[Mapping[str, Any], ...]
    factorial: Mapping[str, Any] | None
    timing: Timing
    training_iters: int
    calibration: bool
    calibration_m: tuple[int, ...] | None
    executor: Executor
    #: ``[calibration] probes = true``: run ``subquad calibrate``'s probes into
    #: ``DIR/calibration.json`` before the cells (docs/MACHINE_MODEL.md)
    calibration_probes: bool = False


# ------------------------------------------------------------------------------- helpers


class Where:
    """Builds ConfigErrors that name the file and the key path."""

    def __init__(self, path: Path):
        self.path = path

    def error(self, key: str, message: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}", message)

    def expect(self, ok: bool, key: str, what: str, got: str) -> None:
        """Unless ``ok``: the error "must be <what>, got <got>"."""
        if not ok:
            raise self.error(key, f"must be {what}, got {got}")

    def table(self, value: Any, key: str, allowed: tuple[str, ...]) -> dict:
        """``value`` as a table whose every key is one of ``allowed``."""
        self.expect(isinstance(value, dict), key, "a table", type(value).__name__)
        for k in value:
            if k not in allowed:
                raise self.error(f"{key}.{k}" if key else k,
                                 f"unknown key {k!r}; accepted: {', '.join(allowed)}")
        return value

    def require(self, table: Mapping, k: str, key: str, hint: str) -> Any:
        """``table[k]``; without it the error "missing; <hint>" at ``key``."""
        if k not in table:
            raise self.error(key, f"missing; {hint}")
        return table[k]

    def integer(self, value: Any, key: str, lo: int | None = None) -> int:
        self.expect(isinstance(value, int) and not isinstance(value, bool), key, "an integer",
                    repr(value))
        if lo is not None and value < lo:
            raise self.error(key, f"must be an integer >= {lo}, got {value}")
        return value

    def number(self, value: Any, key: str, lo: float | None = None,
               strict: bool = False) -> float:
        self.expect(isinstance(value, (int, float)) and not isinstance(value, bool), key,
                    "a number", repr(value))
        v = float(value)
        if not math.isfinite(v) or (lo is not None and (v <= lo if strict else v < lo)):
            bound = "" if lo is None else (f" > {lo:g}" if strict else f" >= {lo:g}")
            raise self.error(key, f"must be a finite number{bound}, got {value!r}")
        return v

    def string(self, value: Any, key: str, accepted: tuple[str, ...] | None = None) -> str:
        self.expect(isinstance(value, str), key, "a string", repr(value))
        if accepted is not None and value not in accepted:
            raise self.error(key, f"unknown value {value!r}; accepted: {', '.join(accepted)}")
        return value

    def boolean(self, value: Any, key: str) -> bool:
        self.expect(isinstance(value, bool), key, "true or false", repr(value))
        return value


def axis_value(w: Where, axis: str, value: Any, key: str) -> int | float:
    """One value of an axis, type- and range-checked (m >= 8, c in (0, 0.5], ...)."""
    if axis in INT_AXES:
        v = w.integer(value, key)
        lo = {"m": 8, "n": 1, "d": 1, "L": 1, "seed": 0}[axis]
        if v < lo or (axis == "L" and v > 64):
            rng = "[1, 64]" if axis == "L" else f">= {lo}"
            raise w.error(key, f"{axis} must be an integer {rng}, got {v}")
        return v
    v = w.number(value, key)
    if not 0.0 < v <= 0.5:
        raise w.error(key, f"c (sparsity exponent) must lie in (0, 0.5], got {value!r}")
    return v


def geometric(w: Where, axis: str, grid: Mapping, key: str) -> list[int | float]:
    """Values start, start r, start r^2, ... <= stop (r = 2 or sqrt 2); integers rounded."""
    w.table(grid, key, GRID_KEYS)
    for k in ("start", "stop"):
        w.require(grid, k, f"{key}.{k}",
                  "a grid is {start = ..., stop = ..., ratio = 2 | \"sqrt2\"}")
    ratio_raw = grid.get("ratio", 2)
    if isinstance(ratio_raw, bool) or ratio_raw not in RATIOS:
        raise w.error(f"{key}.ratio", f"unsupported ratio {ratio_raw!r}; accepted: 2 or \"sqrt2\"")
    ratio = RATIOS[ratio_raw]
    start = axis_value(w, axis, grid["start"], f"{key}.start")
    stop = axis_value(w, axis, grid["stop"], f"{key}.stop")
    if stop < start:
        raise w.error(f"{key}.stop", f"must be >= start ({start}), got {stop}")
    out: list[int | float] = []
    k = 0
    while True:
        x = start * ratio**k
        if axis in INT_AXES:  # round first, so a printed grid value (23168) can be the stop
            step = M_ROUND if axis == "m" and x >= 8 * M_ROUND else 1
            x = int(round(x / step) * step)
        if x > stop * (1 + 1e-9):
            break
        if x not in out:
            out.append(x)
        k += 1
    return out


def axis_values(w: Where, axis: str, spec: Any, key: str) -> list[int | float]:
    """An explicit list (no duplicates) or a geometric grid table, sorted ascending."""
    if isinstance(spec, dict):
        return geometric(w, axis, spec, key)
    if not isinstance(spec, list) or not spec:
        raise w.error(key, "must be a non-empty list of values or a grid {start, stop, ratio}")
    vals = [axis_value(w, axis, v, f"{key}[{i}]") for i, v in enumerate(spec)]
    if len(set(vals)) != len(vals):
        raise w.error(key, f"duplicate values in {spec}")
    return sorted(vals)


# ------------------------------------------------------------------------------- sections


def _method(w: Where, raw: Any, key: str) -> MethodSpec:
    t = w.table(raw, key, METHOD_KEYS)
    accepted = method_names()
    method = w.require(t, "method", f"{key}.method", f"accepted: {', '.join(accepted)}")
    method = w.string(method, f"{key}.method", accepted)
    opts = []
    for k, types in OPTION_TYPES.items():
        if k in t:
            v = t[k]
            if isinstance(v, bool) or not isinstance(v, types):
                kind = " or ".join(tp.__name__ for tp in types)
                raise w.error(f"{key}.{k}", f"must be of type {kind}, got {v!r}")
            opts.append((k, float(v) if float in types else v))
    label = w.string(t.get("label", method), f"{key}.label")
    return MethodSpec(method, label, tuple(opts))


def _methods(w: Where, raw: Any, key: str, known: tuple[MethodSpec, ...] = ()
             ) -> tuple[MethodSpec, ...]:
    """A list of method tables, or (per sweep) a list of labels of the top-level methods."""
    if not isinstance(raw, list) or not raw:
        raise w.error(key, "must be a non-empty list of [[methods]] tables"
                      + (" or of method labels" if known else ""))
    by_label = {m.label: m for m in known}
    out = []
    for i, item in enumerate(raw):
        if isinstance(item, str) and known:
            if item not in by_label:
                raise w.error(f"{key}[{i}]", f"unknown method label {item!r}; accepted: "
                              f"{', '.join(by_label)}")
            out.append(by_label[item])
        else:
            out.append(_method(w, item, f"{key}[{i}]"))
    labels = [m.label for m in out]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise w.error(key, f"duplicate method labels {dup}; give each variant a distinct "
                      "`label`")
    seen: dict[tuple, str] = {}
    for m in out:
        same = seen.setdefault((m.method, tuple(sorted(m.options))), m.label)
        if same != m.label:
            raise w.error(key, f"methods {same!r} and {m.label!r} have the same method and "
                          "options, so they would be one cell under two labels; change an "
                          "option or remove one")
    return tuple(out)


def _fixed(w: Where, raw: Mapping, key: str, base: Mapping[str, Any]) -> dict[str, Any]:
    """Fixed values (m, n, d, L, c, seed(s), data, labels, threshold, dtype) over ``base``."""
    out = dict(base) | {k: axis_value(w, k, raw[k], f"{key}.{k}") for k in ("m", "n", "d", "L", "c")
                        if k in raw}
    if "seed" in raw and "seeds" in raw:
        raise w.error(f"{key}.seeds", "give either `seed` or `seeds`, not both")
    if "seed" in raw:
        out["seeds"] = (axis_value(w, "seed", raw["seed"], f"{key}.seed"),)
    if "seeds" in raw:
        out["seeds"] = tuple(axis_values(w, "seed", raw["seeds"], f"{key}.seeds"))
    choices = {"data": DATASETS, "labels": LABELS, "threshold": THRESHOLDS, "dtype": DTYPES}
    return out | {k: w.string(raw[k], f"{key}.{k}", accepted) for k, accepted in choices.items()
                  if k in raw}


def _timing(w: Where, raw: Any) -> Timing:
    t = w.table(raw, "timing", tuple(f.name for f in fields(Timing)))
    kw: dict[str, Any] = {}
    for f in fields(Timing):  # in field order: max_iters is bounded by the iters before it
        value, key = t.get(f.name, f.default), f"timing.{f.name}"
        if isinstance(f.default, bool):
            kw[f.name] = w.boolean(value, key)
        elif isinstance(f.default, float):
            kw[f.name] = w.number(value, key, 0.0, strict=f.name == "cell_budget_seconds")
        elif value is not None:  # threads: unset leaves the defaults
            kw[f.name] = w.integer(value, key, kw["iters"] if f.name == "max_iters" else 1)
    if kw["rounds"] > kw["samples"]:
        raise w.error("timing.rounds", f"must not exceed timing.samples ({kw['samples']}): "
                      f"every round takes at least one sample, got {kw['rounds']}")
    return Timing(**kw)


def parse_minutes(value: Any, key: str = "time", w: Where | None = None) -> int:
    """Slurm time as minutes (int) or "HH:MM:SS" / "D-HH:MM:SS" -> whole minutes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"(?:(\d+)-)?(\d+):(\d{2})(?::(\d{2}))?", value.strip())
        if m:
            days, hh, mm, ss = (int(g) if g else 0 for g in m.groups())
            total = days * 1440 + hh * 60 + mm + math.ceil(ss / 60)
            if total > 0:
                return total
    msg = f"must be minutes (an integer > 0) or \"HH:MM:SS\", got {value!r}"
    raise w.error(key, msg) if w is not None else ConfigError(key, msg)


def _executor(w: Where, raw: Any) -> Executor:
    t = w.table(raw, "executor", EXECUTOR_KEYS)
    kw: dict[str, Any] = {"kind": w.string(t.get("kind", "local"), "executor.kind", EXECUTOR_KINDS)}
    kw |= {k: w.string(t[k], f"executor.{k}") for k in ("partition", "account", "constraint")
           if k in t}
    if "time" in t:
        kw["time"] = parse_minutes(t["time"], "executor.time", w)
    kw |= {k: w.integer(t[k], f"executor.{k}", 0 if k == "gpus_per_task" else 1)
           for k in ("gpus_per_task", "cpus_per_task", "array_parallelism") if k in t}
    if "exclusive" in t:
        kw["exclusive"] = w.boolean(t["exclusive"], "executor.exclusive")
    if "setup" in t:
        setup = t["setup"]
        if not isinstance(setup, list) or not all(isinstance(s, str) for s in setup):
            raise w.error("executor.setup", "must be a list of shell lines (strings)")
        kw["setup"] = tuple(setup)
    return Executor(**kw)


# ------------------------------------------------------------------------------- loading


def load_experiment(path: str | Path) -> Experiment:
    """Read and validate an experiment file, including every cell it expands to."""
    path = Path(path)
    w = Where(path)
    if not path.is_file():
        raise ConfigError(str(path), "no such experiment file")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from exc
    w.table(raw, "", TOP_KEYS)

    name = w.string(raw.get("name", path.stem), "name")
    if not NAME_RE.match(name):
        raise w.error("name", f"must be letters, digits, '.', '_' or '-' (it names the result "
                      f"directory), got {name!r}")
    description = w.string(raw.get("description", ""), "description")
    backend = w.string(raw.get("backend", "numpy"), "backend", BACKENDS)
    dtype = w.string(raw.get("dtype", "float64"), "dtype", DTYPES)
    methods = _methods(w, w.require(raw, "methods", "methods", "add at least one [[methods]] "
                                    f"table with method = one of {', '.join(method_names())}"),
                       "methods")
    fixed_raw = w.table(raw.get("fixed", {}), "fixed", FIXED_KEYS)
    fixed = _fixed(w, fixed_raw, "fixed", {**FIXED_DEFAULTS, "dtype": dtype})
    sweeps = _sweeps(w, raw.get("sweeps", []), methods, fixed)
    factorial = _factorial(w, raw["factorial"], methods, fixed) if "factorial" in raw else None
    timing = _timing(w, raw.get("timing", {}))
    training_iters, calibration, calibration_m, probes = _training_and_calibration(w, raw)
    executor = _executor(w, raw.get("executor", {}))
    fit_options(raw, w)
    if not sweeps and factorial is None:
        raise w.error("sweeps", "no cells: add at least one [[sweeps]] table or a [factorial]")
    exp = Experiment(path, name, description, backend, dtype, methods, fixed, tuple(sweeps),
                     factorial, timing, training_iters, calibration, calibration_m, executor,
                     probes)
    validate_cells(exp, expand_cells(exp))
    return exp


def fit_options(raw: Mapping, w: Where | None = None) -> dict:
    """The [fit] table as ``fit_run`` options: window ('all'|'auto') and min_m (fit from m)."""
    w = w or Where(Path("experiment.toml"))
    fit = w.table(raw.get("fit", {}), "fit", FIT_KEYS)
    out: dict = {}
    if "window" in fit:
        out["window"] = w.string(fit["window"], "fit.window", FIT_WINDOWS)
    if "min_m" in fit:
        v = fit["min_m"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise w.error("fit.min_m", f"must be a positive integer width, got {v!r}")
        out["min_axis"] = {"m": v}
    return out


def _sweeps(w: Where, raw: Any, methods: tuple[MethodSpec, ...], fixed: Mapping
            ) -> list[dict]:
    if not isinstance(raw, list):
        raise w.error("sweeps", "must be an array of tables ([[sweeps]])")
    out = []
    for i, item in enumerate(raw):
        key = f"sweeps[{i}]"
        t = w.table(item, key, SWEEP_KEYS)
        axis = w.string(w.require(t, "axis", f"{key}.axis", f"accepted: {', '.join(AXES)}"),
                        f"{key}.axis", AXES)
        if axis in t or (axis == "seed" and "seeds" in t):
            raise w.error(f"{key}.{axis}", "is the swept axis; give its values in `values`")
        values = axis_values(w, axis, w.require(t, "values", f"{key}.values",
                                                "a list or {start, stop, ratio}"), f"{key}.values")
        sweep_fixed = _fixed(w, t, key, fixed)
        sweep_methods = (_methods(w, t["methods"], f"{key}.methods", methods)
                         if "methods" in t else methods)
        training = w.boolean(t.get("training", True), f"{key}.training")
        out.append({"axis": axis, "values": values, "fixed": sweep_fixed,
                    "methods": sweep_methods, "training": training, "key": key})
    return out


def _factorial(w: Where, raw: Any, methods: tuple[MethodSpec, ...], fixed: Mapping) -> dict:
    t = w.table(raw, "factorial", FACTORIAL_KEYS)
    grid = {a: axis_values(w, a, t[a] if isinstance(t[a], (list, dict)) else [t[a]],
                           f"factorial.{a}") for a in ("m", "n", "d", "L", "c") if a in t}
    if not grid:
        raise w.error("factorial", "needs value lists for at least one of m, n, d, L, c")
    rest = {k: v for k, v in t.items() if k in FIXED_KEYS and k not in grid}
    f = _fixed(w, rest, "factorial", fixed)
    ms = _methods(w, t["methods"], "factorial.methods", methods) if "methods" in t else methods
    training = w.boolean(t.get("training", True), "factorial.training")
    return {"grid": grid, "fixed": f, "methods": ms, "training": training}


def _training_and_calibration(w: Where, raw: Mapping
                              ) -> tuple[int, bool, tuple[int, ...] | None, bool]:
    tr = w.table(raw.get("training", {}), "training", TRAINING_KEYS)
    iters = w.integer(tr.get("iterations", 0), "training.iterations", 0)
    cal = w.table(raw.get("calibration", {}), "calibration", CALIBRATION_KEYS)
    enabled = w.boolean(cal.get("enabled", bool(cal)), "calibration.enabled")
    grid = (tuple(int(v) for v in axis_values(w, "m", cal["m"], "calibration.m"))
            if "m" in cal else None)
    probes = w.boolean(cal.get("probes", False), "calibration.probes")
    return iters, enabled, grid, probes


# ------------------------------------------------------------------------------- cells


def _cell(exp: Experiment, spec: MethodSpec, fixed: Mapping, training: bool, **axes: Any
          ) -> Cell:
    p = {**fixed, **axes}
    d = p["d"] if p["d"] is not None else default_d(p["data"])
    return Cell(experiment=exp.name, method=spec.method, backend=exp.backend, dtype=p["dtype"],
                m=int(p["m"]), n=int(p["n"]), d=int(d), L=int(p["L"]), c=float(p["c"]),
                seed=int(p["seed"]), data=p["data"], labels=p["labels"],
                threshold=p["threshold"], options=spec.options,
                training_iters=exp.training_iters if training and not
                spec.method.startswith("calib") else 0, label=spec.label)


def expand_cells(exp: Experiment) -> list[Cell]:
    """Every cell of the experiment in a deterministic order, duplicates merged.

    Order: calibration kernels (m ascending), then each sweep (values ascending, methods and
    seeds interleaved at each value so slow drift hits all methods alike), then the factorial.
    """
    cells: dict[str, Cell] = {}

    def add(cell: Cell, chain: tuple[str, int] | None) -> None:
        cid = cell.cell_id
        old = cells.get(cid)
        links = (old.chains if old else ()) + ((chain,) if chain else ())
        cells[cid] = replace(old or cell, chains=links)

    if exp.calibration:
        grid = exp.calibration_m or _m_grid(exp)
        for kernel in CALIBRATION:
            spec = MethodSpec(kernel, kernel)
            for pos, m in enumerate(grid):
                add(_cell(exp, spec, {**exp.fixed, "seed": exp.fixed["seeds"][0]}, False, m=m),
                    (f"calibration:{kernel}", pos))
    for sw in exp.sweeps:
        axis = sw["axis"]
        for pos, value in enumerate(sw["values"]):
            for spec in sw["methods"]:
                seeds = [value] if axis == "seed" else list(sw["fixed"]["seeds"])
                for seed in seeds:
                    vals = {"seed": seed} if axis == "seed" else {axis: value, "seed": seed}
                    chain = ((f"{sw['key']}:{spec.label}:seed={seed}", pos)
                             if axis in GROWING_AXES else None)
                    add(_cell(exp, spec, sw["fixed"], sw["training"], **vals), chain)
    if exp.factorial is not None:
        f = exp.factorial
        for combo in itertools.product(*f["grid"].values()):  # the last axis varies fastest
            for spec in f["methods"]:
                for seed in f["fixed"]["seeds"]:
                    add(_cell(exp, spec, f["fixed"], f["training"], seed=seed,
                              **dict(zip(f["grid"], combo))), None)
    out = [replace(c, round=r) for r in range(exp.timing.rounds) for c in cells.values()]
    identity = experiment_identity(exp.name, exp.timing, out)
    return [replace(c, identity=identity) for c in out]


def experiment_identity(name: str, timing: Timing, cells: list[Cell]) -> str:
    """sha256 of an experiment's canonical content: its name, timing and every cell (its
    parameters and label); not of the file's spelling, description, executor or [fit]."""
    payload = json.dumps({"name": name, "timing": asdict(timing),
                          "cells": [[c.cell_id, c.label] for c in cells]}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _m_grid(exp: Experiment) -> tuple[int, ...]:
    """Calibration widths: every m of the m sweeps, else the fixed m."""
    ms = sorted({int(v) for sw in exp.sweeps if sw["axis"] == "m" for v in sw["values"]})
    return tuple(ms) or (int(exp.fixed["m"]),)


def validate_cells(exp: Experiment, cells: list[Cell]) -> None:
    """Run ``TrainConfig.validate()`` (memory estimate included) on every cell, up front."""
    w = Where(exp.path)
    if exp.backend != "numpy":
        usable, why = gpu_available()
        if not usable:
            raise w.error("backend", f"backend {exp.backend!r} needs cupy and a usable GPU: "
                          f"{why}; run it where a GPU is usable (README, \"GPU\") or set "
                          "backend = \"numpy\"")
    real_ok: set[tuple[str, int, int]] = set()
    for cell in cells:
        where = f"cell ({cell.describe()})"
        if cell.is_calibration:
            need = float(cell.m) ** 2 * (4 if cell.dtype == "float32" else 8)
            if need > 0.9 * available_bytes(cell.backend):
                raise w.error(where, f"calibration gemv at m = {cell.m} needs "
                              f"{fmt_bytes(need)}; lower calibration.m")
            continue
        fixed_d = fixed_dimension(cell.data)
        if fixed_d is not None and cell.d != fixed_d:
            raise w.error(f"{where}: d", f"{cell.data} has d = {fixed_d} features, got {cell.d}")
        try:
            if cell.data in REAL_SETS and (cell.data, cell.n, cell.seed) not in real_ok:
                load(cell.data, cell.n, cell.d, cell.seed)
                real_ok.add((cell.data, cell.n, cell.seed))
            cell.train_config().validate()
        except ConfigError as exc:
            raise w.error(f"{where}: {exc.param}", str(exc)[len(exc.param) + 2:]) from exc
        except TypeError as exc:  # an option TrainConfig does not take
            raise w.error(where, str(exc)) from exc
