# subquad: `make sweep` (the main job) and `make test`. Both set up .venv themselves.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
SUBQUAD := $(VENV)/bin/subquad
EXPERIMENT ?= default
OUT ?= results/$(EXPERIMENT)

.PHONY: all test lint sweep experiment check-scaling bench clean-venv \
	asv-machine asv-check asv-smoke asv-history asv-publish asv-preview asv-browser-check \
	asv-screenshot asv-compare asv-planted

all: test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV): $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q --durations=15

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check subquad tests experiments asv_bench

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
# from it (RunDir.derived_files: fits, claims, axis claims, model tables, report, figures), then every
# command that derives them writes them again, so each derived file describes the new runs.csv.
define run_experiment
	$(SUBQUAD) sweep experiments/$(1).toml --out $(2) --overwrite $(if $(BUDGET),--budget $(BUDGET))
	$(SUBQUAD) fit $(2)
	if [ -f $(2)/calibration.json ]; then $(SUBQUAD) model $(2); fi
	$(SUBQUAD) plot $(2)
	$(SUBQUAD) report $(2)
endef

sweep: $(VENV)/.installed
	$(call run_experiment,default,results/default)

# make experiment EXPERIMENT=width  ->  results/width (OUT=... to change the directory,
# BUDGET=seconds to cap the sweep: cells it does not reach are recorded as censored)
experiment: $(VENV)/.installed
	$(call run_experiment,$(EXPERIMENT),$(OUT))

# ---- scaling history with asv (README, "Scaling history with asv"; docs/ASV.md) ---------
ASV := $(VENV)/bin/asv
# results/asv/ holds this machine's history under this name (a 2-core AMD EPYC VM)
ASV_MACHINE ?= amd-epyc-2core-vm
# make asv-history ASV_RANGE=A..B ASV_STEPS=N: N commits spread over the first-parent range
ASV_RANGE ?= HEAD~13..HEAD
ASV_STEPS ?= 13
# make asv-compare ASV_BASE=<commit>: HEAD against it, failing on a rise of more than
# ASV_FACTOR in a benchmark matching ASV_BENCH (default: the deterministic counted work)
ASV_BASE ?= HEAD~1
ASV_FACTOR ?= 1.05
ASV_BENCH ?= ^work\.
ASV_HTML := .asv/html

asv-machine: $(VENV)/.installed
	$(ASV) machine --yes --machine $(ASV_MACHINE) --os "$$(uname -sr)" --arch "$$(uname -m)" \
		--cpu "$$(awk -F': ' '/model name/{print $$2; exit}' /proc/cpuinfo) ($$(nproc) cores)" \
		--num_cpu "$$(nproc)" --ram "$$(awk '/MemTotal/{printf "%d GB", $$2/1048576}' /proc/meminfo)" \
		> /dev/null

asv-check: $(VENV)/.installed
	$(ASV) check --python=same

# the quick smoke of make test, by itself (tests/test_asv_smoke.py)
asv-smoke: $(VENV)/.installed
	$(PY) -m pytest -q tests/test_asv_smoke.py

asv-history: asv-machine
	$(ASV) run --machine $(ASV_MACHINE) --show-stderr --skip-existing-successful \
		--steps $(ASV_STEPS) $(ASV_RANGE)

asv-publish: $(VENV)/.installed
	bash experiments/dashboard/setup.sh
	$(ASV) publish --no-pull -o $(ASV_HTML)
	$(PY) experiments/dashboard/localize.py $(ASV_HTML)

asv-preview: asv-publish
	$(ASV) preview -o $(ASV_HTML)

# publishes into a temporary directory and opens every page in headless Chromium
asv-browser-check: $(VENV)/.installed
	SUBQUAD_REQUIRE_BROWSER=1 $(PY) -m pytest -q tests/test_asv_dashboard.py

asv-screenshot: $(VENV)/.installed
	rm -rf .asv/shots
	SUBQUAD_REQUIRE_BROWSER=1 SUBQUAD_DASHBOARD_SCREENSHOTS=.asv/shots \
		$(PY) -m pytest -q tests/test_asv_dashboard.py
	cp .asv/shots/work.FusedWorkExponents.track_forward.page.png docs/asv-dashboard.png
	cp .asv/shots/seconds.SecondsExponents.track_subquad.page.png docs/asv-dashboard-seconds.png

# CI: HEAD against ASV_BASE; exits non-zero when an exponent rises by more than ASV_FACTOR.
# Its results go to .asv/compare/results, not into the committed history.
asv-compare: asv-machine
	$(PY) experiments/asv_conf.py .asv/compare/asv.conf.json results_dir=.asv/compare/results \
		html_dir=.asv/compare/html
	$(ASV) --config .asv/compare/asv.conf.json continuous --machine $(ASV_MACHINE) \
		--factor $(ASV_FACTOR) --show-stderr -b '$(ASV_BENCH)' $(ASV_BASE) HEAD

asv-planted: asv-machine
	ASV=$(ASV) ASV_MACHINE=$(ASV_MACHINE) bash experiments/asv_planted.sh
