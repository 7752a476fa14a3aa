# The two commands a newcomer needs: `make demo` and `make test`. Both install what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: deps lint typecheck-tree test test-unit test-agent demo bench bench-agent openapi crds clean

deps:
	@hack/install-deps.sh

# mypy reads the packages through a link tree that mirrors their import names.
typecheck-tree:
	@mkdir -p .build/typecheck/tuxio
	@ln -sfn ../../../nodeagent .build/typecheck/tuxio/nodeagent
	@ln -sfn ../../../operator .build/typecheck/tuxio/operator

lint: deps typecheck-tree
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy -p tuxio.nodeagent -p tuxio.operator

test: lint
	$(PY) -m pytest -q tests

test-unit: deps
	$(PY) -m pytest -q tests/unit

test-agent: deps
	$(PY) -m pytest -q tests/agent

demo: deps
	$(PY) hack/demo-agent.py

bench: bench-agent

openapi: deps
	$(PY) hack/render-openapi.py

crds: deps
	$(PY) hack/render-crds.py

bench-agent: deps
	$(PY) bench/agent_bench.py --out bench/results/agent.json

clean:
	rm -rf .build .pytest_cache .mypy_cache .ruff_cache
