# Quickstart: `make repro` and `make test`. Both create the locked virtualenv
# in .venv when it is missing or older than the lock, then do their work.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
# `make ... VENV=/path/to/.venv` runs with an environment built elsewhere (the
# template's tests run a freshly generated project this way). Such an
# environment is used as it is, never installed into: it belongs to another
# checkout, whose package it has installed (stages run from this folder, so
# they import this folder's package first).
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCK := requirements/lock.txt
# Your own dependencies (docs/your-code.md): yours, never touched by `copier update`.
USER_REQS := requirements/user.txt
BASE ?= main
# The environment's dvc when there is one (also in test copies without .venv).
DVC := $(or $(wildcard $(BIN)/dvc),dvc)

# make exports variables given on its command line to every recipe; these are
# the Makefile's own knobs, which no stage reads: keep them out of the stages'
# environment, so `make repro VENV=...` shares the warm server of `dvc repro`.
unexport VENV BASE FORCE LOGS LABELS EXPORT PLOTS_URL

# No telemetry, no network: the template must work offline.
export DVC_NO_ANALYTICS := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export BENTOML_DO_NOT_TRACK := true
export DO_NOT_TRACK := true
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: env schema repro params plots remote mlflow-server serve image k8s monitor test test-template test-fast test-exhaustive lint format report lock clean help

help:
	@echo "make schema   draft conf/data/schema/<data>.yaml from the raw files (FORCE=1 replaces one)"
	@echo "make repro    set up .venv if needed, compose params, run the DVC pipeline"
	@echo "make test     set up .venv if needed, run lint, type checks and the test suite"
	@echo "              (in a generated project: this project's tier; the template's: make test-template)"
	@echo "make test-fast  unit tests only (no end-to-end dvc runs)"
	@echo "make test-exhaustive  the longest end-to-end checks (container image, ...), which make test leaves out"
	@echo "make plots    render the DVC plots to dvc_plots/index.html (works offline)"
	@echo "make report   Markdown report of params/metrics/plots vs BASE=$(BASE)"
	@echo "make lock     re-resolve requirements/lock.txt from pyproject.toml"
	@echo "make serve    serve the built Bento on 127.0.0.1 (port: serve.port; key: \$$TABULAR_API_KEY)"
	@echo "make image    build the Bento's container image, tagged name:version (docs/deploying.md)"
	@echo "make k8s      Kubernetes manifests for that image in deploy/ (params: deploy)"
	@echo "make monitor  drift (and live quality with LABELS=file) of the prediction log LOGS=...; exit 1 on a gate failure"

ifeq ($(VENV),.venv)
env: $(STAMP)
else
env:
	@test -x $(BIN)/python || { echo "VENV=$(VENV): no environment there" >&2; exit 2; }
endif

# uv installs the lock in well under half pip's time (fresh 2-core machine,
# empty caches: 2m13s against 5m32s, bytecode compilation included in both:
# PYTHONDONTWRITEBYTECODE is set on some machines, so an uncompiled venv would
# pay on every import). uv reads neither pip's config files nor PIP_* variables,
# so it is handed the two things the lock needs from them: pip's find-links
# (where a machine keeps the CPU torch wheel) and PIP_EXTRA_INDEX_URL (the
# PyTorch CPU index in the GitHub workflows, which also mirrors common packages
# at other versions: hence unsafe-best-match, pip's own behaviour). torch is
# pinned as 2.13.0+cpu, so no index can substitute a CUDA build. uv itself comes
# from the lock; if it cannot be installed or fails, pip installs the lock.
$(STAMP): $(LOCK) pyproject.toml $(wildcard $(USER_REQS))
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 required, found {sys.version.split()[0]}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@links="$${PIP_FIND_LINKS:-$$($(BIN)/python -m pip config get global.find-links 2>/dev/null)}"; \
	uv_opts="$$(for l in $$links; do echo --find-links "$$l"; done) \
	         $$(for u in $${PIP_EXTRA_INDEX_URL:-}; do echo --extra-index-url "$$u"; done)"; \
	set -x; \
	{ $(BIN)/python -m pip install --quiet "$$(grep -m1 '^uv==' $(LOCK))" \
	  && $(BIN)/uv pip install --quiet --python $(BIN)/python --compile-bytecode \
	       --index-strategy unsafe-best-match $$uv_opts -r $(LOCK); } \
	|| { echo "uv could not install the lock; installing it with pip" >&2; \
	     $(BIN)/python -m pip install --quiet -r $(LOCK); }
	@if grep -qEv '^[[:space:]]*(#|$$)' $(USER_REQS) 2>/dev/null; then set -x; \
	  $(BIN)/python -m pip install --quiet -r $(USER_REQS) -c $(LOCK); fi
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Composing first also covers edits to paths in conf/: dvc.yaml interpolates
# them from params.yaml before the compose stage could rewrite it.
repro: env
	$(BIN)/python -m stages.compose
	$(BIN)/dvc repro

params: env
	$(BIN)/python -m stages.compose

# A first schema for a new dataset, inferred from its raw files as ingest reads
# them; review it before committing. Refuses to replace a non-empty schema
# unless FORCE=1.
schema: params
	$(BIN)/python -m tabular_pipeline.data.schema_infer $(if $(FORCE),--force)

# A DVC remote on S3 or any S3-compatible store, from the environment. It is
# written to .dvc/config.local (git-ignored): nothing about it lands in git.
#   DVC_REMOTE_URL=s3://bucket/prefix [DVC_REMOTE_ENDPOINT=https://host:port] make remote
# Credentials come from the usual AWS variables (AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...), read by DVC at push/pull time.
remote:
	@test -n "$(DVC_REMOTE_URL)" || { echo "set DVC_REMOTE_URL=s3://bucket/prefix (and DVC_REMOTE_ENDPOINT for a non-AWS store)"; exit 2; }
	$(DVC) remote add --local --force --default storage "$(DVC_REMOTE_URL)"
	$(if $(DVC_REMOTE_ENDPOINT),$(DVC) remote modify --local storage endpointurl "$(DVC_REMOTE_ENDPOINT)")

# A shared MLflow tracking server on 127.0.0.1: SQLite backend, artifacts in
# MLFLOW_ARTIFACTS (a local folder, or s3://bucket/prefix with
# MLFLOW_S3_ENDPOINT_URL for an S3-compatible store). Point the pipeline at it
# with MLFLOW_TRACKING_URI=http://127.0.0.1:$(MLFLOW_PORT).
MLFLOW_PORT ?= 5000
MLFLOW_HOME ?= .mlflow-server
MLFLOW_ARTIFACTS ?= $(abspath $(MLFLOW_HOME))/artifacts
mlflow-server: env
	mkdir -p $(MLFLOW_HOME)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) \
	  --workers 1 --backend-store-uri sqlite:///$(abspath $(MLFLOW_HOME))/mlflow.db \
	  --artifacts-destination $(MLFLOW_ARTIFACTS)

plots: env
	$(BIN)/python -m tabular_pipeline.plots --out dvc_plots

# Two tiers (docs/testing.md). In a project generated from the template (it has
# .copier-answers.yml), `make test` checks that project: tests/test_project.py
# (its data contract, a smoke run through package on a sample of its data, its
# served Bento) and the user's own tests in OWN_TESTS; the template's suite is
# `make test-template` there. In the template, `make test` is the template's
# suite (which includes the project tier, on the Adult example).
# Installs nothing system-wide: tests needing Chromium or promtool skip without
# them, and pytest's summary (-ra) lists each skip with its reason.
OWN_TESTS ?= $(wildcard tests/own)
ifneq ($(wildcard .copier-answers.yml),)
test: env lint
	$(BIN)/pytest tests/test_project.py $(OWN_TESTS)
else
test: test-template
endif

test-template: env lint
	$(BIN)/pytest

test-fast: env
	$(BIN)/pytest -m "not slow"

# The exhaustive tier: the longest end-to-end checks, which `make test` leaves
# out (pytest exits 5 when the tier is empty: that is not a failure).
test-exhaustive: env
	$(BIN)/pytest -m exhaustive || [ $$? -eq 5 ]

# Serves models/service.bento (built by `make repro`) from a project-local,
# git-ignored BentoML store (.bentoml/). Needs TABULAR_API_KEY unless serve.auth: none.
serve: env
	$(BIN)/python -m tabular_pipeline.serving.cli

# The Bento's OCI image, tagged with its name:version (docs/deploying.md).
# ENGINE=docker|podman|buildah (default: the first that works; buildah needs no
# daemon). STANDIN_BASE=1 (buildah): where python:3.11-slim cannot be pulled,
# make it locally with debootstrap (cached in ~/.cache/tabular-pipeline).
image: env
	$(BIN)/python -m tabular_pipeline.serving.image $(if $(ENGINE),--engine $(ENGINE)) $(if $(STANDIN_BASE),--standin-base)

# Kubernetes manifests for that image (Deployment, Service, HPA, Prometheus
# scrape job) in deploy.out_dir, from params and the Bento's version.
k8s: env
	$(BIN)/python -m tabular_pipeline.serving.deploy

# Monitoring of served traffic (docs/monitoring.md): LOGS = file, folder, glob or
# s3:// URL (default monitor.logs), LABELS = prediction_id,label CSV (optional),
# EXPORT = .parquet for the labelled rows as new training data (docs: Retrain).
monitor: env
	PYTHONHASHSEED=0 $(BIN)/python -m tabular_pipeline.monitoring.cli $(if $(LOGS),--logs "$(LOGS)") $(if $(LABELS),--labels "$(LABELS)") $(if $(EXPORT),--export-training "$(EXPORT)")

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
	.lockenv/bin/python -m pip install --quiet -e ".[dev,catboost]" $(if $(wildcard $(USER_REQS)),-r $(USER_REQS))
	{ echo "# Exact, tested dependency set for Python 3.11 (linux x86_64), CPU-only torch."; \
	  echo "# Regenerate with \`make lock\` after changing pyproject.toml; never edit by hand."; \
	  .lockenv/bin/python -m pip freeze --exclude-editable; } > $(LOCK)
	rm -rf .lockenv

clean:
	-test -x $(BIN)/python && $(BIN)/python -m tabular_pipeline.warm --stop
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
