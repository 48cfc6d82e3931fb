# ModelRollout entry points. Every target installs what it needs; see README.md.
#   make demo          bring up the testbed, install the operator, run a rollout end to end
#   make test          all tiers (unit, integration, e2e) - what CI runs
#   make test-unit     fast tier, no cluster
#   make lint          static checks: import contracts, ruff format/check, mypy, the router's Go lint
#   make cluster-up    start the local testbed (admin kubeconfig: .cluster/kubeconfig)
#   make cluster-down  stop it and remove its state
#   make bench         benchmarks; results under benchmarks/results/

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(PY) -m pytest
CACHE_DIR ?= $(HOME)/.cache/modelrollout
export MODELROLLOUT_CACHE := $(CACHE_DIR)
export KUBECONFIG_TESTBED := $(CURDIR)/.cluster/kubeconfig
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

DEB_PACKAGES := espeak-ng sox prometheus nginx-light openssl iproute2
# The testbed's real node (e2e/testbed/node_host.py): CRI runtime, CNI plugins, kube-proxy's tools.
DEB_PACKAGES += containerd runc containernetworking-plugins iptables conntrack

.PHONY: deps sysdeps bins images testbed-bin router-bin helm-bin cluster-up cluster-down \
        test test-unit test-fuzz test-integration test-e2e lint demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,demo]'
	# silero-vad declares torch; we only need its ONNX files (see speech_serving/vad.py).
	$(PY) -m pip install --quiet --no-deps 'silero-vad>=6.2'
	touch $@

deps: $(VENV)/.installed

sysdeps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ] && [ "$$(id -u)" != 0 ]; then \
	  echo "sysdeps: missing Debian packages:$$missing; installing them needs root (run as root, or apt-get install them)" >&2; exit 1; fi; \
	if [ -n "$$missing" ]; then echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi

# Go-built binaries (kube-apiserver, etcd, kwok, helm, the router), cached by version.
testbed-bin:
	e2e/testbed/build.sh

router-bin:
	model_server/traffic_router/build.sh

# helm alone (the unit tier's chart tests need it; a minute or two when cold).
helm-bin:
	e2e/testbed/build.sh helm

bins: testbed-bin router-bin

# The operator, model-server and router images from their Dockerfiles (buildah; needs root), with
# OCI archives and index.json under $(CACHE_DIR)/images/. See images/README.md.
images:
	images/build.sh

cluster-up: deps sysdeps bins
	$(PY) -m e2e.testbed up

cluster-down:
	@if [ -x $(PY) ]; then $(PY) -m e2e.testbed down; fi

# Static checks (see README "Lint"): import-layer contracts, the formatter (check only), the linter,
# the type checker (config in pyproject.toml; strict on the operator's domain) and the router's Go
# lint (go vet + staticcheck). Every step runs; the target fails if any step found something.
LINT_STEPS := "lint-imports" "ruff format --check ." "ruff check ." "mypy" "model_server/traffic_router/lint.sh"

lint: deps
	@failed=""; for step in $(LINT_STEPS); do echo "== $$step"; $$step || failed="$$failed, $$step"; done; \
	if [ -n "$$failed" ]; then echo "lint: failed: $${failed#, }" >&2; exit 1; fi; echo "lint: all checks passed"

test-unit: deps sysdeps router-bin helm-bin
	$(PYTEST) -m unit tests/unit

# The fuzz tier: property-based fuzzers on the server's decode path and the operator's spec
# parsing (tests/fuzz, seed corpus in tests/fuzz/corpus), and Go's coverage-guided fuzzer on
# the router's request handling (model_server/traffic_router/fuzz.sh). Each is bounded in
# examples or seconds, so the tier's cost is fixed; see docs/security.md.
test-fuzz: deps router-bin
	$(PYTEST) -m fuzz tests/fuzz
	model_server/traffic_router/fuzz.sh

# The integration tier runs the operator as a local process against pods the process-runner
# (kwok) node runs from the checked-out source, so it needs no image build: its own kwok-only
# testbed instance (ports +3000), started and stopped here. See docs/testbed.md.
INTEGRATION_TESTBED := MODELROLLOUT_TESTBED_DIR=$(CURDIR)/.cluster-integration \
  MODELROLLOUT_TESTBED_PORT_OFFSET=3000 MODELROLLOUT_TESTBED_POD_CIDR=198.19.0.0/17 \
  MODELROLLOUT_TESTBED_NODE=process

test-integration: deps sysdeps bins
	$(INTEGRATION_TESTBED) $(PY) -m e2e.testbed up
	rc=0; $(INTEGRATION_TESTBED) $(PYTEST) -m integration tests/integration || rc=$$?; \
	  $(INTEGRATION_TESTBED) $(PY) -m e2e.testbed down; exit $$rc

test-e2e: cluster-up
	$(PYTEST) -m e2e e2e/tests

# The README's test command. Tiers run in order; any failure (or a tier with no tests,
# pytest exit code 5) fails the whole run. The testbed is stopped afterwards either way.
test: deps sysdeps bins
	$(MAKE) lint
	$(MAKE) test-unit
	$(MAKE) test-fuzz
	$(MAKE) test-integration
	$(MAKE) images
	$(MAKE) cluster-up
	rc=0; $(MAKE) test-e2e || rc=$$?; $(MAKE) cluster-down; exit $$rc

demo: deps sysdeps bins images
	$(PY) -m e2e.demo

bench: deps sysdeps bins
	$(PY) -m benchmarks

clean: cluster-down
	rm -rf $(VENV) .cluster
