# `make run`: set up .venv (pinned) and run the main job.  `make test`: set up and run the whole test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test bench venv venv-extras

$(BIN)/.core: requirements.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(BIN)/.extras: $(BIN)/.core requirements-extras.txt
	$(BIN)/python -m pip install -q -r requirements-extras.txt
	touch $@

venv: $(BIN)/.core
venv-extras: $(BIN)/.extras

run: $(BIN)/.core
	$(BIN)/python experiments/toy_addition.py --out runs/toy

test: $(BIN)/.extras
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests

bench: $(BIN)/.extras
	$(BIN)/python benchmarks/attention.py
	$(BIN)/python benchmarks/model_step.py
