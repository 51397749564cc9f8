# subquad: `make sweep` (the main job) and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUBQUAD := $(VENV)/bin/subquad
EXPERIMENT ?= default
OUT ?= results/$(EXPERIMENT)

.PHONY: all test lint sweep experiment check-scaling bench clean-venv

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV): $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check subquad tests experiments

clean-venv:
	rm -rf $(VENV)

# ---- regression checks (README, "Regression checks") ------------------------------------
CHECK_DIR := results/check-scaling
CHECK_EXPERIMENT := experiments/check_scaling.toml

.PHONY: check-scaling-baseline

check-scaling: $(VENV)/.installed
	$(SUBQUAD) sweep $(CHECK_EXPERIMENT) --out $(CHECK_DIR)/run --overwrite
	$(SUBQUAD) fit $(CHECK_DIR)/run
	$(SUBQUAD) check $(CHECK_DIR)/run --baselines $(CHECK_DIR)/baselines

# records this machine's baseline as $(CHECK_DIR)/baselines/<machine id>/
check-scaling-baseline: $(VENV)/.installed
	$(SUBQUAD) sweep $(CHECK_EXPERIMENT) --out $(CHECK_DIR)/fresh --overwrite
	$(SUBQUAD) fit $(CHECK_DIR)/fresh
	$(SUBQUAD) check $(CHECK_DIR)/fresh --record-baseline $(CHECK_DIR)/baselines
	rm -rf $(CHECK_DIR)/fresh

bench: $(VENV)/.installed
	mkdir -p results/bench
	$(PY) -m pytest benchmarks/test_kernels_bench.py -q -p no:cacheprovider \
		--benchmark-json results/bench/bench.json
	$(SUBQUAD) fit results/bench/bench.json

# A fresh, complete result: --overwrite replaces the old cells, runs.csv and everything derived
# from it (RunDir.derived_files: fits, claims, model tables, report, figures), then every
# command that derives them writes them again, so each derived file describes the new runs.csv.
define run_experiment
	$(SUBQUAD) sweep experiments/$(1).toml --out $(2) --overwrite $(if $(BUDGET),--budget $(BUDGET))
	$(SUBQUAD) fit $(2)
	if [ -f $(2)/calibration.json ]; then $(SUBQUAD) model $(2); fi
	$(SUBQUAD) plot $(2)
	$(SUBQUAD) report $(2)
	$(PY) -m subquad.analysis.axis_claims $(2)
endef

sweep: $(VENV)/.installed
	$(call run_experiment,default,results/default)

# make experiment EXPERIMENT=width  ->  results/width (OUT=... to change the directory,
# BUDGET=seconds to cap the sweep: cells it does not reach are recorded as censored)
experiment: $(VENV)/.installed
	$(call run_experiment,$(EXPERIMENT),$(OUT))
