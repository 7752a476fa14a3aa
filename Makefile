# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: deps lint typecheck-tree test test-slow test-unit test-agent test-e2e test-project-quota demo demo-agent bench bench-agent \
	bench-operator bench-pool bench-placement bench-probe bench-kube-client bench-metrics bench-density bench-terminal bench-web abuse fuzz chaos test-kind openapi crds cluster-up cluster-down kind-up kind-down clean

deps:
	@hack/install-deps.sh

# mypy reads the packages through a link tree that mirrors their import names.
typecheck-tree:
	@mkdir -p .build/typecheck/tuxio
	@for pkg in common nodeagent operator gateway client web ledger; do \
		ln -sfn ../../../$$pkg .build/typecheck/tuxio/$$pkg; done

lint: deps typecheck-tree
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p tuxio.common -p tuxio.nodeagent -p tuxio.operator -p tuxio.gateway -p tuxio.client -p tuxio.web -p tuxio.ledger
	PYTHONPATH=.build/typecheck $(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/hadolint operator/Dockerfile nodeagent/Dockerfile gateway/Dockerfile web/Dockerfile
	$(VENV)/bin/shellcheck -x -P SCRIPTDIR hack/*.sh hack/lib/*.sh .ci/run

# The suite on TEST_WORKERS pytest-xdist workers, a test module per worker at a time
# (--dist loadfile keeps a module's fixtures together), each worker with a control plane of its
# own (tests/conftest.py). Most of the suite waits on real processes, so workers beyond the
# core count pay off; TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 4
PYTEST_WORKERS := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: lint
	$(PY) -m pytest -q $(PYTEST_WORKERS) tests --ignore=tests/kind

# The whole suite on a slow machine: it and everything it starts (the control plane included,
# restarted inside the throttle) held to SLOW_CORES of one core. See docs/testing.md.
SLOW_CORES ?= 0.5
test-slow: deps
	hack/cluster-down.sh
	TUXIO_START_TIMEOUT=900 hack/run-throttled.sh --cores $(SLOW_CORES) -- $(MAKE) test

test-unit: deps
	$(PY) -m pytest -q tests/unit

test-agent: deps
	$(PY) -m pytest -q $(PYTEST_WORKERS) tests/agent

test-e2e: deps
	$(PY) -m pytest -q $(PYTEST_WORKERS) tests/e2e

# The project-quota disk backend, on a host whose kernel has quota support (not these
# machines: see docs/disk.md); not part of `make test`.
test-project-quota: deps
	$(PY) -m pytest -q -p no:cacheprovider hosttests/test_project_quota.py

# The whole flow: control plane, CRDs, agent, operator, a Sandbox applied and used with kubectl;
# then tuxio-web with the gateway, visited once with headless chromium and left running
# (Ctrl+C stops it; TUXIO_DEMO_WEB_SECONDS=N stops it after N seconds).
demo: deps
	$(PY) hack/demo.py
	$(PY) hack/web-demo.py

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

bench: bench-agent bench-operator bench-pool bench-placement bench-probe bench-kube-client bench-metrics bench-density bench-terminal bench-web

openapi: deps
	$(PY) hack/render-openapi.py

crds: deps
	$(PY) hack/render-crds.py

# Six attacks at once next to a quiet neighbour, measured from outside (docs/disk.md).
ABUSE_SECONDS ?= 30
abuse: deps
	$(PY) bench/abuse.py --seconds $(ABUSE_SECONDS) --out bench/results/abuse.json

# Schemathesis against the real agent and gateway, FUZZ_CASES cases per operation and mode
# (docs/fuzz.md); the short version of the same tests runs in `make test`.
FUZZ_CASES ?= 1000
fuzz: deps
	rm -f bench/results/fuzz.json
	TUXIO_FUZZ_CASES=$(FUZZ_CASES) TUXIO_FUZZ_REPORT=$(CURDIR)/bench/results/fuzz.json \
		$(PY) -m pytest -q -p no:cacheprovider tests/agent/test_fuzz.py tests/e2e/test_gateway_fuzz.py

# A churn of 200 sandboxes while the operator, the agent, a gateway replica, kube-apiserver
# and etcd are SIGKILLed at seeded random moments; then nothing may be lost (docs/chaos.md).
# CHAOS_ARGS e.g. "--seed 42" to replay a run, "--sandboxes 50 --kills 5" to shorten it.
CHAOS_ARGS ?=
chaos: deps
	$(PY) bench/chaos.py --out bench/results/chaos.json $(CHAOS_ARGS)

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

# A scrape of the agent's /metrics with 1000 running sandboxes (docs/metrics.md).
bench-metrics: deps
	$(PY) bench/metrics_bench.py --out bench/results/metrics.json

bench-density: deps
	$(PY) bench/density.py --out bench/results/density.json

# Visitors arriving open-loop at rising rates against the whole stack; WEB_BENCH_ARGS to shorten
# (e.g. WEB_BENCH_ARGS="--rates 2 --seconds 3").
WEB_BENCH_ARGS ?=
bench-web: deps
	$(PY) bench/web_bench.py --out bench/results/web.json $(WEB_BENCH_ARGS)

bench-kube-client: deps
	$(PY) bench/kube_client_bench.py --out bench/results/kube-client.json

# Terminals, exec and claims through the gateway; a plot beside the JSON (terminal.png).
bench-terminal: deps
	$(PY) bench/terminal_bench.py --out bench/results/terminal.json

clean:
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
