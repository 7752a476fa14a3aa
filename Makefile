# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: deps lint typecheck-tree test test-slow test-unit test-agent test-e2e demo demo-agent bench bench-agent \
	bench-operator bench-pool bench-placement bench-probe bench-kube-client openapi crds cluster-up cluster-down kind-up kind-down \
	test-kind clean

deps:
	@hack/install-deps.sh

# mypy reads the packages through a link tree that mirrors their import names.
typecheck-tree:
	@mkdir -p .build/typecheck/tuxio
	@for pkg in common nodeagent operator gateway client web; do \
		ln -sfn ../../../$$pkg .build/typecheck/tuxio/$$pkg; done

lint: deps typecheck-tree
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p tuxio.common -p tuxio.nodeagent -p tuxio.operator -p tuxio.gateway -p tuxio.client -p tuxio.web
	PYTHONPATH=.build/typecheck $(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/hadolint operator/Dockerfile nodeagent/Dockerfile gateway/Dockerfile
	$(VENV)/bin/shellcheck -x -P SCRIPTDIR hack/*.sh hack/lib/*.sh .ci/run

test: lint
	$(PY) -m pytest -q tests --ignore=tests/kind

# The whole suite on a slow machine: it and everything it starts (the control plane included,
# restarted inside the throttle) held to SLOW_CORES of one core. See docs/testing.md.
SLOW_CORES ?= 0.5
test-slow: deps
	hack/cluster-down.sh
	TUXIO_START_TIMEOUT=900 hack/run-throttled.sh --cores $(SLOW_CORES) -- $(MAKE) test

test-unit: deps
	$(PY) -m pytest -q tests/unit

test-agent: deps
	$(PY) -m pytest -q tests/agent

test-e2e: deps
	$(PY) -m pytest -q tests/e2e

# The whole flow: control plane, CRDs, agent, operator, a Sandbox applied and used with kubectl.
demo: deps
	$(PY) hack/demo.py

# The node agent alone, without Kubernetes.
demo-agent: deps
	$(PY) hack/demo-agent.py

# A real kube-apiserver, etcd and kube-controller-manager on loopback, built from source.
cluster-up:
	@hack/cluster-up.sh

cluster-down:
	@hack/cluster-down.sh

# tuxio deployed in a one-node kind cluster from the manifests and its own images, all made here
# from Debian packages and Go modules (podman, or docker where its daemon runs). docs/kind.md.
kind-up:
	@hack/kind-up.sh

kind-down:
	@hack/kind-down.sh

# The kind tier against the cluster of kind-up (made first; a second run reuses it).
test-kind: deps kind-up
	$(PY) -m pytest -q tests/kind

bench: bench-agent bench-operator bench-pool bench-placement bench-probe bench-kube-client

openapi: deps
	$(PY) hack/render-openapi.py

crds: deps
	$(PY) hack/render-crds.py

bench-agent: deps
	$(PY) bench/agent_bench.py --out bench/results/agent.json

bench-operator: deps
	$(PY) bench/operator_bench.py --out bench/results/operator.json

bench-pool: deps
	$(PY) bench/pool_bench.py --out bench/results/pool.json

bench-placement: deps
	$(PY) bench/placement_bench.py --out bench/results/placement.json

bench-probe: deps
	$(PY) bench/probe_bench.py --out bench/results/probe.json

bench-kube-client: deps
	$(PY) bench/kube_client_bench.py --out bench/results/kube-client.json

clean:
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
