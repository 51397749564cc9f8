#!/usr/bin/env bash
# The whole GPU check on one CUDA machine: one script, about 8 minutes on an H100-class card.
#
# From the repository root, with the project and its `gpu` extra installed (.venv is used when
# it exists, else python3 with the project on PYTHONPATH):
#
#     OUT=/tmp/gpu-out bash experiments/gpu/run.sh
#
# or as one job of a cluster's GPU partition:
#
#     sbatch --partition gpu --gpus 1 --exclusive --time 00:20:00 \
#            --wrap "OUT=$PWD/gpu-out bash experiments/gpu/run.sh"
#
# Steps, each under its own timeout and all inside GPU_RUN_SECONDS (default 480 s): the GPU
# tests (SUBQUAD_REQUIRE_GPU=1: a missing GPU fails, never skips), the NVRTC compile test and
# the CPU kernel tests, the forward-kernel benchmark, the sweep experiments/gpu/width.toml (its
# --budget is what is left minus the reserve for fit/plot/report), then `subquad
# fit/plot/report`, then packing. What $OUT holds afterwards:
#
#     gpu-<card>/             the run directory: runs.csv, fits, figures, report.md, logs
#     gpu-<card>.tar.gz       the same, packed for copying off a remote machine
#     summary.txt             card, driver, versions, each step's exit status, the fitted slopes
#     pytest-gpu.log  pytest-cpu-kernels.log  bench-forward.csv  run.log
#
# Keep the result with `cp -r $OUT/gpu-<card> results/` (card = h100, a100, ... from
# nvidia-smi). A sweep cut short by its budget keeps its finished cells; the rest are recorded
# as censored and `subquad sweep experiments/gpu/width.toml --out results/gpu-<card> --resume`
# continues it. Overrides: GPU_RUN_SECONDS (480), GPU_EXPERIMENT (experiments/gpu/width.toml),
# PYTHON (.venv/bin/python, else python3), OUT (/tmp/subquad-gpu-out).
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 2
OUT=${OUT:-/tmp/subquad-gpu-out}
if [ -x .venv/bin/python ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
LIMIT=${GPU_RUN_SECONDS:-480}
EXPERIMENT=${GPU_EXPERIMENT:-experiments/gpu/width.toml}
RESERVE=75  # seconds kept for fit, plot, report and packing after the sweep
export PYTHONPATH=$PWD SUBQUAD_REQUIRE_GPU=1 PYTHONUNBUFFERED=1
mkdir -p "$OUT"
exec > >(tee "$OUT/run.log") 2>&1

SUMMARY=$OUT/summary.txt
WORST=0
left() { echo $((LIMIT - SECONDS)); }
note() { echo "$*" | tee -a "$SUMMARY"; }

# step NAME SECONDS LOG CMD...: run CMD under a timeout, log it, record its exit status.
step() {
    local name=$1 limit=$2 log=$3 rc
    shift 3
    echo "=== $name (limit ${limit}s, $(left)s left) ==="
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"
    rc=$?
    note "$(printf '%-22s exit %3d  at %4ds' "$name" "$rc" "$SECONDS")"
    [ "$rc" -ne 0 ] && WORST=$rc
    return 0
}

name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
card=$(echo "$name" | tr 'A-Z' 'a-z' | grep -oE '[a-z][0-9]{2,4}[a-z]?' | head -1)
card=${card:-gpu}
RUN=$OUT/gpu-$card
rm -rf "$RUN"
mkdir -p "$(dirname "$RUN")"
{
    echo "subquad GPU run, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null)"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
    $PY -c 'import sys, numpy, cupy; print("python", sys.version.split()[0], "numpy",
        numpy.__version__, "cupy", cupy.__version__, "cuda runtime",
        cupy.cuda.runtime.runtimeGetVersion())' 2>&1
} > "$SUMMARY"
cat "$SUMMARY"

step pytest-gpu 200 "$OUT/pytest-gpu.log" \
    "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
step pytest-cpu-kernels 90 "$OUT/pytest-cpu-kernels.log" \
    "$PY" -m pytest -q -p no:cacheprovider -x tests/test_kernels.py tests/test_cuda_compile.py
step bench-forward 90 "$OUT/bench-forward.log" \
    "$PY" experiments/gpu/bench_forward.py "$OUT/bench-forward.csv"
rm -f "$OUT/bench-forward.log"  # the table is in run.log and bench-forward.csv

budget=$(( $(left) - RESERVE ))
[ "$budget" -lt 60 ] && budget=60
step sweep $((budget + 45)) "$RUN.sweep.log" \
    "$PY" -m subquad sweep "$EXPERIMENT" --out "$RUN" --budget "$budget"
mkdir -p "$RUN"
if [ ! -f "$RUN/runs.csv" ] && [ -d "$RUN/cells" ]; then
    step sweep-merge 30 "$RUN.merge.log" "$PY" -m subquad sweep --merge "$RUN"
fi
mv "$RUN".*.log "$RUN/" 2>/dev/null
step fit 60 "$RUN/fit.txt" "$PY" -m subquad fit "$RUN"
step plot 60 "$RUN/plot.txt" "$PY" -m subquad plot "$RUN"
step report 30 "$RUN/report.txt" "$PY" -m subquad report "$RUN"

{ echo; echo "fitted exponents and crossover (subquad fit):"; cat "$RUN/fit.txt"; } \
    >> "$SUMMARY" 2>/dev/null
tar -czf "$OUT/gpu-$card.tar.gz" -C "$OUT" "gpu-$card"
note "packed $(du -h "$OUT/gpu-$card.tar.gz" | cut -f1) gpu-$card.tar.gz; worst exit $WORST;" \
    "total ${SECONDS}s"
exit "$WORST"
