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
