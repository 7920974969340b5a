# batchdrop: the two commands first.
#   make demo   run the example job end to end on the local stack
#   make test   run the whole test suite (starts its own services)
# Everything installs itself on first use (.venv, node_modules) and is quick afterwards.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed

.PHONY: demo test up down setup bench clean

demo: setup
	$(PY) -m scripts.demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

up: setup
	$(PY) -m scripts.devstack up

down:
	@if [ -x $(PY) ]; then $(PY) -m scripts.devstack down; else echo "nothing to stop"; fi

setup: $(STAMP_PY) $(STAMP_NODE)

$(STAMP_PY): requirements.txt requirements-dev.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "batchdrop needs Python 3.11 or newer"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@# the project itself, editable: the `batchdrop` command in $(VENV)/bin (its dependencies are pinned above;
	@# setuptools too, so the build needs nothing else)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

$(STAMP_NODE): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

bench: setup
	$(PY) -m benchmarks.run_all

clean: down
	rm -rf $(VENV) node_modules .devstack .pytest_cache

# Opt-in, never part of `make test`: end-to-end against the deployment of the current azd environment
# (docs/deploy.md); skipped, saying why, when there is none.
.PHONY: test-azure
test-azure: setup
	BATCHDROP_AZURE_TESTS=1 $(PY) -m pytest tests/infra/live -rs -s $(PYTEST_ARGS)
