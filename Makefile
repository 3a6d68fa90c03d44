# Quickstart: `make repro` and `make test`. Both create the locked virtualenv
# in .venv when it is missing or older than the lock, then do their work.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
BASE ?= main

# No telemetry, no network: the template must work offline.
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export DO_NOT_TRACK := true
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: env repro params test test-fast lint format report lock clean help chromium

help:
	@echo "make repro    set up .venv if needed, compose params, run the DVC pipeline"
	@echo "make test     set up .venv if needed, run lint, type checks and the test suite"
	@echo "make test-fast  unit tests only (no end-to-end dvc runs)"
	@echo "make report   Markdown report of params/metrics/plots vs BASE=$(BASE)"
	@echo "make lock     re-resolve requirements/lock.txt from pyproject.toml"
	@echo "make chromium install headless Chromium (apt) for the report rendering test"

env: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, found {sys.version.split()[0]}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Composing first also covers edits to paths in conf/: dvc.yaml interpolates
# them from params.yaml before the compose stage could rewrite it.
repro: env
	$(BIN)/python -m stages.compose
	$(BIN)/dvc repro

params: env
	$(BIN)/python -m stages.compose

test: env lint chromium
	$(BIN)/pytest

# Headless Chromium: the e2e tests screenshot the Evidently drift report to
# check it renders offline. Debian package; skipped when a Chromium or Chrome
# is already installed (GitHub's Ubuntu runners ship google-chrome).
chromium:
	@command -v chromium >/dev/null || command -v google-chrome >/dev/null || { \
	  echo "installing chromium (apt) for the report rendering test"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; }

test-fast: env
	$(BIN)/pytest -m "not slow"

lint: env
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: env
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

report: env
	$(BIN)/python -m tabular_pipeline.report --base $(BASE) --out reports/pr $(if $(PLOTS_URL),--plots-url "$(PLOTS_URL)")

lock:
	rm -rf .lockenv
	$(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet -e ".[dev]"
	{ echo "# Exact, tested dependency set for Python 3.11 (linux x86_64), CPU-only torch."; \
	  echo "# Regenerate with \`make lock\` after changing pyproject.toml; never edit by hand."; \
	  .lockenv/bin/python -m pip freeze --exclude-editable; } > $(LOCK)
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
