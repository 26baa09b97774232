# `make run`: set up .venv (pinned) and run the main job.  `make test`: set up and run the whole test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test bench venv venv-reference

$(BIN)/.core: requirements.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(BIN)/.reference: $(BIN)/.core requirements-reference.txt
	$(BIN)/python -m pip install -q -r requirements-reference.txt
	touch $@

venv: $(BIN)/.core
venv-reference: $(BIN)/.reference

run: $(BIN)/.core
	$(BIN)/python benchmarks/attention.py --small

test: $(BIN)/.reference
	$(BIN)/python -m pytest -q tests

bench: $(BIN)/.reference
	$(BIN)/python benchmarks/attention.py
