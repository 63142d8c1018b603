# tagifai: the two commands a fresh machine needs are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(PYTHON) -m uv
endif
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := false
export MLFLOW_LOGGING_LEVEL := ERROR
export DASK_LOGGING__DISTRIBUTED := warning
export PREFECT_LOGGING_EXTRA_LOGGERS := tagifai
# tagifai also logs outside flow runs (tagifai train, the CLI): those lines stay local.
export PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW := ignore
# Compiled bytecode at install: imports take half as long, and nothing writes .pyc files
# later where PYTHONDONTWRITEBYTECODE is set (as on this machine).
export UV_COMPILE_BYTECODE := 1

.PHONY: help setup run test test-fast lint bench up down status clean browser-deps team-deps

# Team mode: `make up TEAM=1` switches the stores dir to PostgreSQL + Redis (it stays on),
# `make up TEAM=0` back to the embedded SQLite stores; plain `make up` keeps the current mode.
TEAM ?=
TEAM_FLAG := $(if $(filter 1 true yes,$(TEAM)),--team,$(if $(filter 0 false no,$(TEAM)),--embedded,))

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
	  || $(PYTHON) -m pip install --quiet uv
	$(UV) sync --frozen --quiet --compile-bytecode
	@touch $@

setup: .venv/.synced ## create .venv from uv.lock

browser-deps: ## Debian's chromium for the UI test (Playwright's own download fails here)
	@command -v chromium >/dev/null || { \
	  echo "installing chromium (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium; browser tests will be skipped"; }

team-deps: ## Debian's postgresql and redis-server for team mode (apt-get when missing)
	@if ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v redis-server >/dev/null; then :; \
	elif [ "$$(id -u)" != 0 ]; then \
	  echo "error: team mode needs postgresql and redis-server: sudo apt-get install -y postgresql redis-server" >&2; exit 1; \
	else \
	  echo "installing postgresql and redis-server (apt-get)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql redis-server >/dev/null) \
	  || { echo "error: apt-get could not install postgresql and redis-server" >&2; exit 1; }; \
	fi

run: up ## set up, start the platform, deploy, run dataops and follow the mlops it triggers
	$(UV) run --frozen python -m deployments.run

# team-deps may fail (no root, no apt): the team tests then fail and say why.
test: setup browser-deps ## set up, then run every test: unit and flows, then (own process) e2e, browser, team
	@$(MAKE) --no-print-directory team-deps || echo "warning: team-deps failed; the team tests will fail"
	$(UV) run --frozen pytest -m "not e2e and not browser and not team"
	$(UV) run --frozen pytest -m "e2e or browser or team"

test-fast: setup ## unit tests only
	$(UV) run --frozen pytest -m "not flows and not e2e and not browser and not scale and not dask_cluster and not team"

lint: setup
	$(UV) run --frozen ruff check . && $(UV) run --frozen ruff format --check .

bench: setup ## benchmarks (writes benchmarks/out/*.json and *.png)
	$(UV) run --frozen python -m benchmarks.run

up: setup $(if $(filter --team,$(TEAM_FLAG)),team-deps) ## start server, worker, receiver, sensor, MLflow UI, prediction service, a warm Dask cluster; create automations (TEAM=1: on PostgreSQL + Redis)
	$(UV) run --frozen python -m deployments.platform up $(TEAM_FLAG)
	$(UV) run --frozen python -m deployments.automations

down: ## stop what `make up` started
	@if [ -x .venv/bin/python ]; then .venv/bin/python -m deployments.platform down; fi

status: setup
	$(UV) run --frozen tagifai status

clean: down ## remove all runtime state (stores/)
	rm -rf stores
