# The two front-door commands: `make run` and `make test`. Each bootstraps .venv.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
CONFIG ?= gateway.toml

.PHONY: run test check lint bench bench-bots bench-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test,postgres,mitm]'
	touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/gateway run --dev --log-format text -c $(CONFIG)

lint: $(VENV)/.installed-test
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-test
	$(BIN)/python -m bench.proxy

bench-bots: $(VENV)/.installed-test
	$(BIN)/python -m bench.bots

# What every `python -m bench.…` needs (the test, postgres and mitm extras); `make run` installs
# the gateway alone.
bench-deps: $(VENV)/.installed-test

clean:
	rm -rf $(VENV) build *.egg-info
