# The contract other tools rely on:
#   make venv   .venv with the runtime (editable), ansible and the test tools
#   make run    the main job on the embedded local default
#   make test   the whole test suite (what CI runs)
#   make bench  every benchmark, printing measured figures
# `run` and `test` create .venv first when it is missing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCAL_DIR := build/local

.DEFAULT_GOAL := help
.PHONY: help venv run stop test lint test-runtime test-integration bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): policy_runtime/pyproject.toml requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e 'policy_runtime[embedded,test]' -r requirements-dev.txt
	@touch $@

venv: $(STAMP) ## create .venv with everything installed

run: $(STAMP) ## start the runtime locally, publish and evaluate the sample policies
	$(BIN)/python scripts/run_local.py --dir $(LOCAL_DIR)

stop: ## stop what `make run` started
	@$(BIN)/python scripts/run_local.py --dir $(LOCAL_DIR) --stop

lint: $(STAMP) ## ruff, hadolint, yamllint
	$(BIN)/ruff check policy_runtime bench scripts tests
	$(BIN)/hadolint --config policy_runtime/.hadolint.yaml policy_runtime/Dockerfile
	$(BIN)/yamllint --strict .

test-runtime: $(STAMP) ## the policy runtime's test suite (real worker pool, database, server)
	cd policy_runtime && ../$(BIN)/python -m pytest

test-integration: $(STAMP) ## end-to-end tests of the repository's entry points
	$(BIN)/python -m pytest -p no:cacheprovider tests/integration

test: lint test-runtime test-integration ## the whole test suite

bench: $(STAMP) ## print decision latency and HTTP throughput figures
	$(BIN)/python bench/decision_latency.py
	$(BIN)/python bench/http_decisions.py

clean: stop ## remove build output (keeps .venv)
	rm -rf build
