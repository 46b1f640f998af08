# The two commands of the README: `make run` and `make test`. Everything else is their plumbing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test install dev gen lint typecheck pytest docker-check clean

run: install
	$(BIN)/juki up

test: dev gen lint typecheck docker-check pytest

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

gen: dev
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python scripts/gen_protos.py

lint: dev
	$(BIN)/buf lint protos
	$(BIN)/ruff check .

typecheck: gen
	$(BIN)/mypy libs/jukilib services

docker-check: dev
	PYTHON=$(BIN)/python bash scripts/check_docker.sh

pytest: gen
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) gen build *.egg-info .juki
