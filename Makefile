# batchdrop: the two commands first.
#   make demo   run the example job end to end on the local stack
#   make test   run the whole test suite (starts its own services)
# Everything installs itself on first use (.venv, node_modules) and is quick afterwards.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PY := $(VENV)/.installed
STAMP_NODE := node_modules/.installed

.PHONY: demo test up down setup browser bench clean

demo: setup
	$(PY) -m scripts.demo

test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

# report.html is checked in a real headless browser (tests/browser): Debian's chromium, installed when
# this runs as root; otherwise those tests are skipped, saying why.
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the report.html browser tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "could not install chromium: the browser tests will be skipped (they say why)"; \
	else echo "no /usr/bin/chromium and not root: the browser tests will be skipped (they say why)"; fi

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
	rm -rf $(VENV) $(CLIENTS_VENV) node_modules .devstack .pytest_cache

# Opt-in, never part of `make test`: end-to-end against the deployment of the current azd environment
# (docs/deploy.md); skipped, saying why, when there is none.
.PHONY: test-azure
test-azure: setup
	BATCHDROP_AZURE_TESTS=1 $(PY) -m pytest tests/infra/live -rs -s $(PYTEST_ARGS)

# Opt-in, never part of `make test`: real clients (azure-cli's `az batch`, pinned in tests/clients/requirements.txt)
# against the emulator. azure-cli is large, so it gets its own venv, installed on first use.
CLIENTS_VENV := .venv-clients
STAMP_CLIENTS := $(CLIENTS_VENV)/.installed

$(STAMP_CLIENTS): tests/clients/requirements.txt
	@test -x $(CLIENTS_VENV)/bin/python || $(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r tests/clients/requirements.txt
	@touch $@

.PHONY: test-clients
test-clients: setup $(STAMP_CLIENTS)
	BATCHDROP_CLIENT_TESTS=1 BATCHDROP_AZ=$(CLIENTS_VENV)/bin/az $(PY) -m pytest tests/clients -rs $(PYTEST_ARGS)
