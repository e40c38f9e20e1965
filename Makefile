# The two commands a newcomer runs on a fresh machine: `make demo` and `make test`.
# Everything else here is a building block of those two, or a developer convenience.
SHELL := /bin/bash
.DEFAULT_GOAL := help
CARGO ?= cargo
# Cargo's builds share one target directory per toolchain under ~/.cache/rtdp, as the images'
# release build does: a fresh clone compiles only the workspace's own crates, not every
# dependency again. Set CARGO_TARGET_DIR to choose another.
RTDP_CACHE ?= $(HOME)/.cache/rtdp
ifndef CARGO_TARGET_DIR
CARGO_TARGET_DIR := $(RTDP_CACHE)/cargo-debug-$(shell rustc -V 2>/dev/null | sha256sum | cut -c1-12)
endif
export CARGO_TARGET_DIR
# The operator's test hooks (restarting it mid-reconcile) exist only in test builds.
TEST_FEATURES := --features rtdp-operator/test-hooks
# Every shell script in the repository: the files with a sh or bash shebang, and dev/lib's.
SHELL_SCRIPTS := $(shell git ls-files | xargs grep -lsE '^\#!(/usr/bin/env (ba)?sh|/bin/(ba)?sh)' 2>/dev/null) $(wildcard dev/lib/*.sh)

.PHONY: help demo test lint unit integration crds stack-up stack-down stack-status bench bench-operator kind-e2e

help: ## List the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

demo: ## The main job, end to end, on this machine (brings the local stack up and down)
	@dev/demo

test: ## Every test: formatting, lints, unit and integration tests against the real local stack, then the kind end-to-end on real pods
	@docker info >/dev/null 2>&1 || { echo "make test: the Docker engine does not answer (docker info failed); the kind end-to-end needs it. Debian: apt-get install docker.io and start dockerd (.ci/run does both; see README, Prerequisites)" >&2; exit 1; }
	@dev/stack build
	@$(MAKE) --no-print-directory lint
	@dev/stack run -- $(MAKE) --no-print-directory integration
	@dev/kind-e2e

lint: ## rustfmt, clippy (warnings are errors), cargo-deny (licenses, duplicate versions, sources), shellcheck; builds the fuzz targets so they cannot rot
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked $(TEST_FEATURES) -- -D warnings
	@# The data plane links no Kubernetes client (the API types crate carries only derives).
	@! $(CARGO) tree --locked -p pipeline-runner -e normal -i kube-client 2>/dev/null | grep -q kube-client || { echo "pipeline-runner depends on kube-client; the API types must not pull a Kubernetes client" >&2; exit 1; }
	@# Licenses, duplicate versions and sources (deny.toml); cargo-deny is built once into the cache.
	@dev/deny
	@# Every bash script, with what it sources (paths relative to each script).
	@command -v shellcheck >/dev/null || { echo "make lint: shellcheck is missing (Debian: apt-get install shellcheck; .ci/run installs it; see README, Prerequisites)" >&2; exit 1; }
	shellcheck --external-sources --source-path=SCRIPTDIR $(SHELL_SCRIPTS)
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) build --locked --manifest-path fuzz/Cargo.toml --bins

integration: ## All cargo tests; needs the stack's endpoints in the environment (dev/stack env)
	$(CARGO) test --workspace --locked --no-fail-fast $(TEST_FEATURES)

bench: ## Throughput, latency and RSS of `process` vs. the Cassandra ceiling (release build; prints figures)
	@dev/stack run kafka cassandra -- $(CARGO) bench --locked -p pipeline-runner --bench throughput

bench-operator: ## The operator at RTDP_SCALE_PIPELINES (default 1000) Pipelines on the local stack, release build: time to all-Ready, reconcile p50/p99, API requests per reconcile, peak RSS
	@# A stack it starts gets Cassandra 2 GiB of heap: 1 000 tables' metadata outgrows the default 1 GiB.
	@CASSANDRA_HEAP=$${CASSANDRA_HEAP:-2G} dev/stack run -- env RTDP_SCALE_PIPELINES=$${RTDP_SCALE_PIPELINES:-1000} $(CARGO) test --release --locked -p rtdp-operator $(TEST_FEATURES) --test scale -- --nocapture

kind-e2e: ## The chart, images and example Pipeline on a local kind cluster, on real pods (needs a Docker engine)
	@dev/kind-e2e

crds: ## Regenerate the CRD YAML in the chart from the Rust types
	$(CARGO) run --quiet -p rtdp-crds --bin crdgen -- --write

stack-up: ## Start the local stack (Kafka, Cassandra, Kubernetes API server)
	@dev/stack up

stack-down: ## Stop the local stack
	@dev/stack down

stack-status: ## What runs, where, and where its logs are
	@dev/stack status
