# The contract other tools rely on:
#   make venv   .venv with the runtime (editable), ansible and the test tools
#   make run    the main job on the embedded local default
#   make test   the whole test suite (what CI runs)
#   make bench  every benchmark, printing measured figures
#   make docs   the documentation site, into build/docs/
# `run` and `test` create .venv first when it is missing.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCAL_DIR := build/local

.DEFAULT_GOAL := help
.PHONY: monitoring-crds
.PHONY: help venv collection-link control-plane run shell stop test lint sanity test-runtime test-plugin test-unit test-integration soak bench clean
.PHONY: docs docs-check image

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): policy_runtime/pyproject.toml interlink_nunet/pyproject.toml requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e 'policy_runtime[embedded,test]' \
		-e 'interlink_nunet[test]' -r requirements-dev.txt
	@touch $@

venv: $(STAMP) ## create .venv with everything installed

COLLECTION_LINK := build/collections/ansible_collections/aios/platform
collection-link: ## make this checkout the aios.platform collection for ansible (see ansible.cfg)
	@mkdir -p $(dir $(COLLECTION_LINK))
	@test -e $(COLLECTION_LINK) || ln -s ../../../.. $(COLLECTION_LINK)

run: $(STAMP) collection-link ## the embedded local default: runtime, onboarding, governance, rendered manifests
	$(BIN)/python scripts/run_local.py --dir $(LOCAL_DIR)

shell: $(STAMP) collection-link ## a shell with aios-policy and ansible-playbook on PATH and the collection found (`exit` leaves it)
	@echo "aios.platform tools shell: aios-policy, ansible-playbook, ansible-galaxy on PATH; 'exit' leaves it"
	@VIRTUAL_ENV="$(CURDIR)/$(VENV)" ANSIBLE_COLLECTIONS_PATH="$(CURDIR)/build/collections" \
		bash --rcfile <(printf '%s\n' '[ -f ~/.bashrc ] && . ~/.bashrc' \
		'export PATH="$(CURDIR)/$(BIN):$$PATH" PS1="(aios) $$PS1"') -i

stop: ## stop what `make run` started
	@$(BIN)/python scripts/run_local.py --dir $(LOCAL_DIR) --stop

lint: $(STAMP) collection-link ## ruff, hadolint, yamllint, ansible-lint (production), role docs, changelog
	$(BIN)/ruff check policy_runtime interlink_nunet plugins bench scripts tests
	$(BIN)/hadolint --config policy_runtime/.hadolint.yaml policy_runtime/Dockerfile
	$(BIN)/hadolint --config policy_runtime/.hadolint.yaml interlink_nunet/Dockerfile
	$(BIN)/yamllint --strict .
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/ansible-lint --profile production
	$(BIN)/python scripts/role_docs.py --check
	$(BIN)/python scripts/sync_cluster_model.py --check
	$(BIN)/python scripts/dashboards.py --check
	$(BIN)/antsibull-changelog lint

sanity: $(STAMP) ## ansible-test sanity on the built collection (no ignore file)
	bash scripts/sanity.sh

test-runtime: $(STAMP) ## the policy runtime's test suite (real worker pool, database, server)
	cd policy_runtime && ../$(BIN)/python -m pytest

test-plugin: $(STAMP) ## the NuNet interLink plugin's tests (real process, stand-in DMS)
	cd interlink_nunet && ../$(BIN)/python -m pytest -p no:cacheprovider

soak: $(STAMP) ## the long reliability run: 60 s of load by 200 clients, 200 fuzz examples per route
	cd policy_runtime && AIOS_LOAD_SECONDS=60 AIOS_FUZZ_EXAMPLES=200 ../$(BIN)/python -m pytest \
		tests/test_reliability.py tests/test_fuzz_api.py

test-unit: $(STAMP) collection-link ## unit tests of the collection's plugins
	$(BIN)/python -m pytest -p no:cacheprovider tests/unit

control-plane: ## build the tests' Kubernetes control plane from source (once, cached by version)
	bash scripts/build_control_plane.sh

# Modules run on INTEGRATION_WORKERS parallel workers, each module's tests on one of them (its
# fixtures, such as an installed control plane, are made once): much of their time is spent
# waiting for control planes and playbooks, so three workers keep two cores busy.
INTEGRATION_WORKERS ?= 3
test-integration: $(STAMP) collection-link control-plane ## render, `make run`, apply mode on a real control plane
	$(BIN)/python -m pytest -p no:cacheprovider -n $(INTEGRATION_WORKERS) --dist loadfile --durations=15 tests/integration

# tests/integration/test_monitoring.py: the prometheus-operator's CRDs come from its Go module
# (fetched here once into the module cache), promtool and prometheus from the Debian package
# prometheus (.ci/run installs it; the tests that need them are skipped without).
PROMETHEUS_OPERATOR_MODULE := github.com/prometheus-operator/prometheus-operator@v0.85.0
monitoring-crds: ## fetch the prometheus-operator's Go module (its CRDs) for the monitoring tests
	@command -v go >/dev/null || { echo "go is not installed: the monitoring CRD tests are skipped"; exit 0; }; \
		cd "$${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download $(PROMETHEUS_OPERATOR_MODULE)
test-integration: monitoring-crds

# The site is built by scripts/build_docs.py: docs/ plus the reference generated from the
# collection (antsibull-docs) and from the apps' OpenAPI documents; the diagram needs `dot`
# (Debian package graphviz, which .ci/run installs).
docs: $(STAMP) ## build the documentation site into build/docs/
	$(BIN)/python scripts/build_docs.py

docs-check: $(STAMP) ## build the site with warnings as errors, check every internal link
	@command -v dot >/dev/null || { echo "docs-check: the architecture diagram needs Graphviz's dot: apt-get install graphviz"; exit 1; }
	$(BIN)/python scripts/build_docs.py --check

test: lint sanity docs-check test-unit test-runtime test-plugin test-integration ## the whole test suite

# The images of the policy runtime and the NuNet plugin, tagged as the collection's defaults
# (aios_runtime_image, interlink_plugin_image) unless IMAGE_REGISTRY or IMAGE_TAG say otherwise.
IMAGE_REGISTRY ?= docker.io/aiosv1
IMAGE_TAG ?= $(shell sed -n 's/^version: *//p' galaxy.yml)
CONTAINER_ENGINE ?= $(shell command -v docker || command -v podman)
image: ## build the runtime and NuNet plugin images with docker or podman (IMAGE_REGISTRY, IMAGE_TAG)
	@test -n "$(CONTAINER_ENGINE)" || { echo "make image: neither docker nor podman is installed; install one of them (or set CONTAINER_ENGINE) to build the images"; exit 1; }
	@$(CONTAINER_ENGINE) info >/dev/null 2>&1 || { echo "make image: $(CONTAINER_ENGINE) cannot build here: \`$(notdir $(CONTAINER_ENGINE)) info\` fails (is its daemon running?)"; exit 1; }
	$(CONTAINER_ENGINE) build -f policy_runtime/Dockerfile -t $(IMAGE_REGISTRY)/aios-policy-runtime:$(IMAGE_TAG) \
		--build-arg GIT_COMMIT=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		--build-arg BUILD_DATE=$$(date -u +%FT%TZ) policy_runtime
	$(CONTAINER_ENGINE) build -f interlink_nunet/Dockerfile -t $(IMAGE_REGISTRY)/aios-interlink-nunet:$(IMAGE_TAG) \
		--build-arg GIT_COMMIT=$$(git rev-parse HEAD 2>/dev/null || echo unknown) \
		--build-arg BUILD_DATE=$$(date -u +%FT%TZ) interlink_nunet
	@echo "built $(IMAGE_REGISTRY)/aios-policy-runtime:$(IMAGE_TAG) and $(IMAGE_REGISTRY)/aios-interlink-nunet:$(IMAGE_TAG); push them with $(notdir $(CONTAINER_ENGINE)) push"

bench: $(STAMP) collection-link ## print decision latency, HTTP throughput, render, registry query, onboarding, consolidation, write throughput, regex figures
	$(BIN)/python -m pip install --quiet 'opa-eval>=0.1.1,<0.2'  # bench-only: Rego side-by-side
	$(BIN)/python bench/decision_latency.py
	$(BIN)/python bench/http_decisions.py
	$(BIN)/python bench/render.py
	$(BIN)/python bench/registry_query.py
	$(BIN)/python bench/onboarding.py
	$(BIN)/python bench/consolidation.py
	$(BIN)/python bench/write_throughput.py
	$(BIN)/python bench/regex_guard.py

clean: stop ## remove build output (keeps .venv)
	rm -rf build
