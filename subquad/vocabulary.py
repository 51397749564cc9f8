"""The closed word lists of subquad, declared once; every other module imports them from here.

Imports nothing from the package. Methods are not here: trainers register themselves in
``model/methods.py`` (an open set); the calibration kernels, which are not trainers, are.
"""

from __future__ import annotations

#: the phases of one iteration, in the trainer's order of ALGORITHM.md (fold: lazy structure)
ITERATION_PHASES = ("forward", "backward", "gram", "solve", "update", "fold")
#: every phase of runs.csv: init (the m^2 initialisation), the iteration phases, their sum
#: ``iteration``, and ``kernel`` (a calibration kernel's one phase)
PHASES = ("init", *ITERATION_PHASES, "iteration", "kernel")
#: how a phase's bytes move (docs/MACHINE_MODEL.md): contiguous rows, isolated elements,
#: a BLAS GEMM whose calibrated rate includes its traffic, operands in cache
ACCESS_KINDS = ("stream", "random", "gemm", "compute")
#: calibration kernels and the exponent in m their time must show (the self-check)
CALIBRATION = {"calib-axpy": 1.0, "calib-gemv": 2.0}
BACKENDS = ("numpy", "cupy")
#: where a sweep runs its cells
EXECUTOR_KINDS = ("local", "local-processes", "slurm")
DTYPES = ("float32", "float64")
#: the axes an exponent is fitted in; SIZES are every size parameter of a cell
FIT_AXES = ("m", "n", "d")
SIZES = ("m", "n", "d", "L", "c")
QUANTITIES = ("seconds", "work", "bytes")
#: a cell's status: ok, or why its numbers are not usable
STATUSES = ("ok", "censored", "nan", "cg-not-converged", "singular", "oom", "error")
#: the options that change what a trainer computes, in the order of the ``options`` string
#: (requested values; ``update_resolved`` and ``forward_kernel_resolved`` say what ran)
OPTION_KEYS = ("solver", "update", "rank_max", "forward_kernel", "lr", "damping",
               "sketch_size", "cg_tol")
#: what identifies a variant of a method on any machine: a series, a check or a claim lives
#: inside one value of each (only seeds and samples are pooled)
VARIANT = ("method", "label", "options", "backend", "dtype", "threshold", "data")
#: kinds of ``crossover.csv``, with the words the figure and the report use for each
CROSSOVER_KINDS = {
    "interpolated": "interpolated between measured widths",
    "below range": "below the measured range: subquad is already cheaper at the smallest "
                   "measured width",
    "extrapolated": "extrapolated from the fitted power laws, outside the measured range",
    "none in range": "no crossing in the measured range",
}
#: outcomes of a cell that say nothing about the cell itself: ``--resume`` runs it again
#: (the cell's ``message`` starts with one of these)
RETRY_OUTCOMES = ("sweep budget", "worker lost", "corrupt cell file")
#: why a measured row of runs.csv cannot be fitted (``dropped.csv``; ``results/runs.py``
#: tests them in this order)
DUPLICATE = "duplicate row"
DROP_REASONS = ("seconds missing", "seconds is not a number", "seconds is not finite",
                "seconds is NaN", "seconds is negative",
                "seconds is zero although work was done", "m is not > 0", DUPLICATE)
#: verdicts of a claim (claims.csv) and of a check (``subquad check``)
SUPPORTED, INCONCLUSIVE, REJECTED = "supported", "inconclusive", "not supported"
NOT_MEASURED, NOT_IMPLEMENTED, INFORMATIONAL = "not measured", "not implemented", "informational"
VERDICTS = (SUPPORTED, INCONCLUSIVE, REJECTED, NOT_MEASURED, NOT_IMPLEMENTED, INFORMATIONAL)
#: outcomes of a gate of ``subquad check`` (UNDECIDED: the data could not decide it)
PASS, FAIL, UNDECIDED = "PASS", "FAIL", "UNDECIDED"
