# The two commands of the README: `make run` and `make test`. Everything else is their plumbing.
# Every install comes from uv.lock (`uv sync --locked`): a new release of anything changes nothing here
# until `make lock` updates the lock on purpose and the tests pass on it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
# uv keeps its own environment at .venv (the default), with build output only on failure
SYNC   := $(UV) sync --locked --quiet

.PHONY: run test install dev gen lint typecheck pytest docker-check lock clean

run: install
	$(BIN)/juki up

test: dev gen lint typecheck docker-check pytest

# uv itself, pinned by hash (requirements-uv.txt); the same version is in uv.lock so that sync keeps it
$(UV): requirements-uv.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps \
		-r requirements-uv.txt
	touch $@

# --inexact: `make run` after `make test` must not remove the test tools `make test` then believes installed
$(VENV)/.installed: pyproject.toml setup.py uv.lock | $(UV)
	$(SYNC) --inexact
	touch $@

$(VENV)/.installed-dev: pyproject.toml setup.py uv.lock | $(UV)
	$(SYNC) --extra dev
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

# Upgrade every dependency within pyproject.toml's ranges; review the diff of uv.lock and run `make test`
lock: | $(UV)
	$(UV) lock --upgrade
	echo 'uv==$(shell $(UV) --version | cut -d" " -f2)' | $(UV) pip compile - --generate-hashes --universal \
		--no-header --quiet -o requirements-uv.txt

gen: dev
	$(BIN)/python scripts/gen_protos.py

lint: dev
	$(BIN)/buf lint protos
	$(BIN)/ruff check .

typecheck: gen
	$(BIN)/mypy libs/jukilib libs/jukitools libs/juki_services

docker-check: dev
	PYTHON=$(BIN)/python bash scripts/check_docker.sh

pytest: gen
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) gen build *.egg-info .juki
