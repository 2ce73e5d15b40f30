# The single entry point. `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WHEELHOUSE := .wheelhouse
SAMPLES := .samples
STAMP := $(VENV)/.detpack-setup

.PHONY: setup demo test test-network test-fast lint typecheck bench fuzz clean

setup: $(STAMP)

$(STAMP): pyproject.toml fixtures/wheelhouse.txt fixtures/wheelhouse-extra.txt fixtures/samples.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps -d $(WHEELHOUSE) -r fixtures/wheelhouse.txt
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps -d $(WHEELHOUSE) -r fixtures/wheelhouse-extra.txt
	$(BIN)/python -m pip download --quiet --only-binary=:all: --no-deps -d $(SAMPLES) -r fixtures/samples.txt
	touch $(STAMP)

# detpack's own output says where the outputs and their provenance are.
demo: setup
	$(BIN)/detpack build example -o example/dist --find-links $(WHEELHOUSE) --offline

test: setup
	$(BIN)/python -m pytest -m "not network"

test-network: setup
	$(BIN)/python -m pytest -m network

test-fast: setup
	$(BIN)/python -m pytest -m "not slow and not network"

lint: setup
	$(BIN)/ruff check detpack tests bench fuzz
	$(BIN)/ruff format --check detpack tests bench fuzz

typecheck: setup
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/run.py

FUZZ_SECONDS ?= 300
fuzz: setup
	$(BIN)/python fuzz/run.py --seconds $(FUZZ_SECONDS)

clean:
	rm -rf $(VENV) $(WHEELHOUSE) $(SAMPLES) example/dist .pytest_cache .mypy_cache .ruff_cache
