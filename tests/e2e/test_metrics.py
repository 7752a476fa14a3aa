"""Metrics end to end: a real Prometheus (Debian's package) scrapes the operator, the agent and
both gateway replicas; claims from a pool show in the claim latency histogram and the pool
gauges through its HTTP API; every expression of the Grafana dashboard names a metric the
real components serve."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes
import pytest
import yaml

from tests.e2e import test_gateway
from tests.e2e.conftest import (
    GROUP,
    ROOT,
    RUN_DIR,
    VERSION,
    Cluster,
    Host,
    Operator,
    sandbox,
    wait_phase,
)
from tests.support import STARTED, free_port, wait_until

Custom = kubernetes.client.CustomObjectsApi
PROMETHEUS = "/usr/bin/prometheus"
DASHBOARD = ROOT / "manifests" / "dashboards" / "tuxio.json"
# The gateway's replicas, as the gateway tests run them (the same module fixture).
gateway = test_gateway.gateway


@dataclass
class Prometheus:
    url: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def scalar(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def targets_up(self) -> dict[str, str]:
        answer = httpx.get(f"{self.url}/api/v1/targets", timeout=10).json()
        return {t["labels"]["job"]: t["health"] for t in answer["data"]["activeTargets"]}


def _targets(operator: Operator, host: Host, gw: test_gateway.Gateway) -> dict[str, list[str]]:
    return {
        "tuxio-operator": [f"127.0.0.1:{operator.metrics_port}"],
        "tuxio-agent": [f"127.0.0.1:{host.agent.metrics_port}"],
        "tuxio-gateway": [f"127.0.0.1:{r.metrics_port}" for r in gw.replicas],
    }


@pytest.fixture(scope="module")
def prometheus(
    operator: Operator, host: Host, gateway: test_gateway.Gateway
) -> Iterator[Prometheus]:
    """Prometheus with a configuration of its own, its own storage and a free port, scraping
    every component each second; stopped and removed afterwards."""
    home = RUN_DIR / "prometheus"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": targets}]}
            for job, targets in _targets(operator, host, gateway).items()
        ],
    }
    (home / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = home / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={home / 'prometheus.yml'}",
                f"--storage.tsdb.path={home / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    STARTED.append(proc)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{log.read_text()[-4000:]}")
        try:
            return httpx.get(f"{url}/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=60)
        found = Prometheus(url)
        wanted = {"tuxio-operator": "up", "tuxio-agent": "up", "tuxio-gateway": "up"}
        wait_until(lambda: found.targets_up() == wanted, timeout=60)
        yield found
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(home, ignore_errors=True)


def _pool(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SandboxPool",
        "metadata": {"name": name},
        "spec": {"template": "busybox", "replicas": replicas},
    }


def test_claims_show_in_the_histogram_and_the_pool_gauges(
    cluster: Cluster, custom: Custom, host: Host, namespace: str, prometheus: Prometheus
) -> None:
    pool = f'namespace="{namespace}",pool="metrics-warm"'
    cluster.apply(_pool("metrics-warm", 2), "-n", namespace)
    # The gauges as Prometheus scraped them: the desired count at once, the warm ones once made.
    wait_until(lambda: prometheus.scalar(f"tuxio_pool_desired_containers{{{pool}}}") == 2, 60)
    wait_until(lambda: prometheus.scalar(f"tuxio_pool_warm_containers{{{pool}}}") == 2, 120)
    warm_before = (
        prometheus.scalar(
            'sum(tuxio_sandbox_claim_duration_seconds_count{launch="warm",template="busybox"})'
        )
        or 0.0
    )
    for name in ("claim-1", "claim-2"):
        cluster.apply(sandbox(name, poolRef={"name": "metrics-warm"}), "-n", namespace)
    claimed = [
        wait_phase(custom, namespace, n, "Running", timeout=120) for n in ("claim-1", "claim-2")
    ]
    assert all(body["status"]["fromPool"] == "metrics-warm" for body in claimed)

    warm = 'tuxio_sandbox_claim_duration_seconds_count{launch="warm",template="busybox"}'
    wait_until(lambda: (prometheus.scalar(f"sum({warm})") or 0.0) == warm_before + 2, 60)
    # The histogram's buckets answer a quantile, and every claim is in the +Inf bucket.
    p50 = prometheus.scalar(
        "histogram_quantile(0.5, sum by (le) "
        '(tuxio_sandbox_claim_duration_seconds_bucket{launch="warm"}))'
    )
    assert p50 is not None and p50 > 0
    infinite = prometheus.scalar(
        'sum(tuxio_sandbox_claim_duration_seconds_bucket{launch="warm",le="+Inf"})'
    )
    assert infinite == warm_before + 2
    # The pool refills after the claims: two warm again, as desired.
    wait_until(lambda: prometheus.scalar(f"tuxio_pool_warm_containers{{{pool}}}") == 2, 120)
    # The claimed containers' own series, from the agent, under their container names.
    for body in claimed:
        container = body["status"]["containerName"]
        wait_until(
            lambda c=container: (
                prometheus.scalar(f'tuxio_agent_sandbox_pids{{container="{c}"}}') is not None
            ),
            60,
        )
        assert (
            prometheus.scalar(f'tuxio_agent_sandbox_memory_bytes{{container="{container}"}}') or 0
        ) > 0
    # No label anywhere carries a Sandbox's own name.
    for series in prometheus.query('{__name__=~"tuxio_.+"}'):
        assert "claim-1" not in json.dumps(series["metric"])


def test_every_dashboard_expression_names_a_metric_the_components_serve(
    operator: Operator, host: Host, gateway: test_gateway.Gateway
) -> None:
    served: set[str] = set()
    for targets in _targets(operator, host, gateway).values():
        for target in targets:
            body = httpx.get(f"http://{target}/metrics", timeout=10).text
            served |= {line.split()[2] for line in body.splitlines() if line.startswith("# TYPE")}
    assert served, "no metrics scraped"
    used = dashboard_metrics(json.loads(DASHBOARD.read_text()))
    assert used
    missing = sorted(name for name in used if family_of(name, served) is None)
    assert not missing, f"the dashboard names metrics nothing serves: {missing}"


_NAME = re.compile(r"\btuxio_[a-z0-9_]+")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def dashboard_metrics(dashboard: dict[str, Any]) -> set[str]:
    """Every metric name in the dashboard's expressions."""
    names: set[str] = set()
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            names |= set(_NAME.findall(target["expr"]))
    return names


def family_of(sample: str, families: set[str]) -> str | None:
    """The family (as `# TYPE` names it) a sample name belongs to."""
    if sample in families:
        return sample
    for suffix in _SUFFIXES:
        if sample.endswith(suffix) and sample[: -len(suffix)] in families:
            return sample[: -len(suffix)]
    return None


def test_dashboard_helpers_tell_families_apart() -> None:
    """The helpers above, on names that exist and names that do not."""
    families = {"tuxio_a_seconds", "tuxio_b"}
    assert family_of("tuxio_a_seconds_bucket", families) == "tuxio_a_seconds"
    assert family_of("tuxio_b_total", families) == "tuxio_b"
    assert family_of("tuxio_c_total", families) is None
    assert dashboard_metrics(
        {"panels": [{"targets": [{"expr": "rate(tuxio_b_total[5m]) / tuxio_x"}]}]}
    ) == {"tuxio_b_total", "tuxio_x"}
    assert Path(PROMETHEUS).exists(), "Debian's prometheus package (hack/install-deps.sh)"
