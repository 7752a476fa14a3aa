"""Metrics: each latency observed once whatever is retried, the work queue's counts, the
agent's collector over cgroup trees of both versions, the request timing by route template."""

from __future__ import annotations

import asyncio
import json
import os
import types
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from tuxio.common.metrics import render_families
from tuxio.common.timeutil import FixedClock
from tuxio.nodeagent.budget import OutputBudget
from tuxio.nodeagent.cgroups import CgroupDriver, CgroupFiles, CgroupV1, CgroupV2
from tuxio.nodeagent.metrics import RequestMetrics
from tuxio.nodeagent.sandbox_collector import SandboxCollector
from tuxio.operator.errors import RequeueAfter
from tuxio.operator.launches import Launches
from tuxio.operator.workqueue import WorkQueue

from .fakes import NOW, World, sandbox, world
from .test_sandbox_reconciler import reconciler


def value(metric: str, /, **labels: str) -> float:
    return REGISTRY.get_sample_value(metric, labels) or 0.0


@pytest.fixture
async def w() -> AsyncIterator[World]:
    async for found in world():
        yield found


# ----- the operator: once per Sandbox -------------------------------------------------------


async def test_a_retried_launch_counts_its_latencies_once(w: World) -> None:
    """The agent fails the first PUT (503: requeued), the retry with the same body succeeds,
    and a third run (a duplicate event) finds it settled: one claim and one creation."""
    w.add_host("h1")
    claims = (
        "tuxio_sandbox_claim_duration_seconds_count",
        {"launch": "cold", "template": "busybox"},
    )
    creations = (
        "tuxio_container_creation_duration_seconds_count",
        {"launch": "cold", "template": "busybox"},
    )
    claims_before, creations_before = (
        value(claims[0], **claims[1]),
        value(creations[0], **creations[1]),
    )
    body = sandbox()
    w.launches.arrived("uid-1", body["metadata"]["creationTimestamp"], None, listing=False)
    w.agent.fail("PUT", "/v1/containers/sbx-uid-1", 503)
    with pytest.raises(RequeueAfter):
        await reconciler(w).reconcile(body)
    assert value(claims[0], **claims[1]) == claims_before  # not Ready: nothing yet
    w.clock.advance(2.0)
    the_reconciler = reconciler(w)
    await the_reconciler.reconcile(body)  # the queue retries with the same body
    await the_reconciler.reconcile(body)
    assert value(claims[0], **claims[1]) == claims_before + 1
    assert value(creations[0], **creations[1]) == creations_before + 1
    # The latency spans the failed attempt: it counts from the arrival, not the last try.
    assert value("tuxio_sandbox_claim_duration_seconds_sum", **claims[1]) >= 2.0


def test_a_claim_counts_from_its_admission_and_once() -> None:
    clock = FixedClock(NOW, 100.0)
    launches = Launches(clock.monotonic, clock.now)
    labels = {"launch": "warm", "template": "t-admission"}
    launches.admitted("pool-abc")
    clock.advance(0.5)
    launches.arrived("u1", "2026-03-01T11:00:00Z", "pool-abc", listing=False)
    clock.advance(0.25)
    launches.ready("u1", True, "t-admission", ("ns", "p"))
    launches.ready("u1", True, "t-admission", ("ns", "p"))
    assert value("tuxio_sandbox_claim_duration_seconds_count", **labels) == 1
    assert value("tuxio_sandbox_claim_duration_seconds_sum", **labels) == pytest.approx(0.75)
    assert value("tuxio_pool_misses_total", namespace="ns", pool="p") == 0


def test_after_a_restart_a_claim_counts_from_its_creation_timestamp_and_a_cold_one_is_a_miss() -> (
    None
):
    clock = FixedClock(NOW, 100.0)  # NOW is 2026-03-01T12:00:00Z
    launches = Launches(clock.monotonic, clock.now)
    misses = value("tuxio_pool_misses_total", namespace="ns", pool="restart")
    launches.arrived("u2", "2026-03-01T11:59:57Z", None, listing=True)
    launches.ready("u2", False, "t-restart", ("ns", "restart"))
    labels = {"launch": "cold", "template": "t-restart"}
    assert value("tuxio_sandbox_claim_duration_seconds_sum", **labels) == pytest.approx(3.0)
    assert value("tuxio_pool_misses_total", namespace="ns", pool="restart") == misses + 1
    launches.forget("u2")
    launches.ready("u2", False, "t-restart", ("ns", "restart"))  # unknown now: not observed
    assert value("tuxio_sandbox_claim_duration_seconds_count", **labels) == 1


async def test_the_work_queue_counts_results_retries_and_depth() -> None:
    queue = WorkQueue(kind="QueueTest")
    done = asyncio.Event()
    runs: list[int] = []

    async def work(failures: int) -> None:
        runs.append(failures)
        if failures == 0:
            raise RequeueAfter("not yet", 0.01)
        done.set()

    queue.add("k", work)
    await asyncio.wait_for(done.wait(), 10)
    await queue.close()
    total = "tuxio_operator_reconciliations_total"
    assert runs == [0, 1]
    assert value(total, kind="QueueTest", result="requeue") == 1
    assert value(total, kind="QueueTest", result="success") == 1
    assert value("tuxio_operator_workqueue_retries_total", name="queuetest") == 1
    assert value("tuxio_operator_workqueue_adds_total", name="queuetest") == 1
    assert value("tuxio_operator_workqueue_depth", name="queuetest") == 0
    assert value("tuxio_operator_reconciliation_duration_seconds_count", kind="QueueTest") == 2


# ----- the agent: the collector over cgroup trees -------------------------------------------

V1_FILES = {
    "cpuacct": {"cpuacct.usage": "2500000000"},
    "memory": {
        "memory.usage_in_bytes": "1048576",
        "memory.max_usage_in_bytes": "4194304",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    },
    "pids": {"pids.current": "7"},
}
V2_FILES = {
    "": {
        "cpu.stat": "usage_usec 2500000\nuser_usec 2000000\nsystem_usec 500000\n",
        "memory.current": "1048576",
        "memory.peak": "4194304",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n",
        "pids.current": "7",
    }
}


def _tree(root: Path, name: str, layout: dict[str, dict[str, str]]) -> CgroupFiles:
    dirs = {}
    for controller, files in layout.items():
        directory = root / controller / f"lxc.payload.{name}"
        directory.mkdir(parents=True)
        for key, text in files.items():
            (directory / key).write_text(text)
        dirs[controller] = directory
    return CgroupFiles(dirs)


@pytest.fixture(params=["v1", "v2"])
def host(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[object, Path]:
    driver: CgroupDriver = (
        CgroupV1(tmp_path, True) if request.param == "v1" else CgroupV2(tmp_path, True)
    )
    layout = V1_FILES if request.param == "v1" else V2_FILES
    files = {name: _tree(tmp_path / "cg", name, layout) for name in ("a", "b")}
    service = types.SimpleNamespace(
        cgroups=driver,
        records={"a": object(), "b": object(), "c": object()},
        lxc=types.SimpleNamespace(lxcpath=tmp_path),
        running_cgroups=lambda: list(files.items()),
        files=files,
        output_budget=OutputBudget(2**20),
    )
    return service, tmp_path


def _scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def test_the_collector_reads_each_running_container_at_every_scrape(
    host: tuple[types.SimpleNamespace, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, _ = host
    # The data directory's filesystem as one reading: its free space changes between two
    # scrapes while other tests write to the disk (found by make test-slow).
    st, real = os.statvfs(host[1]), os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda path: st if path == host[1] else real(path))
    collector = SandboxCollector(service)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    registry.register(collector)
    got = _scrape(registry)
    a = (("container", "a"),)
    assert got[("tuxio_agent_sandbox_cpu_seconds_total", a)] == 2.5
    assert got[("tuxio_agent_sandbox_memory_bytes", a)] == 1048576
    assert got[("tuxio_agent_sandbox_memory_peak_bytes", a)] == 4194304
    assert got[("tuxio_agent_sandbox_oom_kills_total", a)] == 2
    assert got[("tuxio_agent_sandbox_pids", a)] == 7
    assert got[("tuxio_agent_containers", (("state", "running"),))] == 2
    assert got[("tuxio_agent_containers", (("state", "stopped"),))] == 1
    assert got[("tuxio_agent_host_inodes", ())] == st.f_files
    assert got[("tuxio_agent_host_disk_size_bytes", ())] == st.f_blocks * st.f_frsize
    assert got[("tuxio_agent_host_disk_free_bytes", ())] == st.f_bavail * st.f_frsize
    assert got[("tuxio_agent_host_inodes_free", ())] == st.f_favail
    assert got[("tuxio_agent_output_held_bytes", ())] == 0
    assert got[("tuxio_agent_output_budget_bytes", ())] == 2**20
    # The agent serves it written in one pass: the same series.
    assert _parsed(collector.render().decode()) == _parsed(generate_latest(registry).decode())

    # Read again, not remembered: a new value shows at the next scrape.
    key = "pids.current"
    files_a = service.files["a"]
    files_a.path(key).write_text("9")
    assert _scrape(registry)[("tuxio_agent_sandbox_pids", a)] == 9

    # A container the agent saw stop has no series any more, and nothing of it is kept open.
    del service.files["b"]
    got = _scrape(registry)
    assert ("tuxio_agent_sandbox_pids", (("container", "b"),)) not in got
    assert set(collector._open) == {"a"}
    collector.close()


def _parsed(text: str) -> list[tuple[str, str, str, list[tuple[str, dict[str, str], float]]]]:
    return [
        (f.name, f.type, f.documentation, [(s.name, s.labels, s.value) for s in f.samples])
        for f in text_string_to_metric_families(text)
    ]


def test_the_fast_renderer_writes_what_prometheus_client_writes() -> None:
    class Families:
        def collect(self) -> list[GaugeMetricFamily | CounterMetricFamily]:
            cpu = CounterMetricFamily(
                "tuxio_x_cpu_seconds", "CPU.\nTwo lines \\ one.", labels=["c"]
            )
            cpu.add_metric(["a"], 2.5)
            cpu.add_metric(['b"\\\n'], 7)  # a label that needs escaping
            mem = GaugeMetricFamily("tuxio_x_memory_bytes", "Memory.", labels=["c", "state"])
            mem.add_metric(["a", "running"], 1048576)
            mem.add_metric(["b", "running"], float("inf"))
            free = GaugeMetricFamily("tuxio_x_free_bytes", "Free.")
            free.add_metric([], 1e20)
            return [cpu, mem, free]

    registry = CollectorRegistry()
    registry.register(Families())  # type: ignore[arg-type]
    fast = render_families(Families().collect()).decode()
    assert _parsed(fast) == _parsed(generate_latest(registry).decode())
    assert "# TYPE tuxio_x_cpu_seconds_total counter" in fast
    with pytest.raises(ValueError, match="histogram"):
        render_families([HistogramMetricFamily("h", "h", buckets=[("+Inf", 0)], sum_value=0)])


async def test_requests_are_timed_by_route_template_and_code() -> None:
    app = FastAPI()

    @app.get("/v1/things/{name}")
    async def thing(name: str) -> dict[str, str]:
        return {"name": name}

    app.add_middleware(RequestMetrics)
    labels = {"method": "GET", "route": "/v1/things/{name}", "code": "200"}
    before = value("tuxio_agent_request_duration_seconds_count", **labels)
    unmatched = {"method": "GET", "route": "unmatched", "code": "404"}
    before_unmatched = value("tuxio_agent_request_duration_seconds_count", **unmatched)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
        assert (await client.get("/v1/things/visitor-name-1")).status_code == 200
        assert (await client.get("/v1/things/visitor-name-2")).status_code == 200
        assert (await client.get("/nowhere")).status_code == 404
    assert value("tuxio_agent_request_duration_seconds_count", **labels) == before + 2
    assert value("tuxio_agent_request_duration_seconds_count", **unmatched) == before_unmatched + 1
    names = generate_latest(REGISTRY).decode()
    assert "visitor-name" not in names  # never a path's own value in a label


# ----- the dashboard and the docs -----------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = json.loads((ROOT / "manifests" / "dashboards" / "tuxio.json").read_text())


def defined_metrics() -> set[str]:
    """Every tuxio metric family the components define: the default registry's (after
    importing each component's metrics) and the collectors'."""
    import importlib

    from tuxio.common.metrics import register_build_info
    from tuxio.operator.pool_metrics import PoolCollector

    for component in ("gateway", "nodeagent", "operator"):
        importlib.import_module(f"tuxio.{component}.metrics")
    registry = CollectorRegistry()
    register_build_info("test", "0", registry)
    names = {f.name for f in registry.collect()}
    names |= {f.name for f in REGISTRY.collect() if f.name.startswith("tuxio_")}
    names |= {f.name for f in SandboxCollector._families().values()}
    names |= {f.name for f in PoolCollector.describe(None)}  # type: ignore[arg-type]
    return names


def test_the_dashboard_is_in_shareable_form() -> None:
    assert DASHBOARD["id"] is None and "uid" not in DASHBOARD
    (source,) = DASHBOARD["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    panels = [p for p in DASHBOARD["panels"] if p["type"] != "row"]
    assert panels
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
        assert panel["targets"]
        assert all(t["datasource"]["uid"] == "${DS_PROMETHEUS}" for t in panel["targets"])


def test_every_dashboard_expression_names_a_defined_metric() -> None:
    from tests.e2e.test_metrics import dashboard_metrics, family_of

    defined = defined_metrics()
    used = dashboard_metrics(DASHBOARD)
    assert len(used) > 10
    missing = sorted(name for name in used if family_of(name, defined) is None)
    assert not missing, missing


def test_the_metrics_page_lists_every_metric() -> None:
    page = (ROOT / "docs" / "metrics.md").read_text()
    counters = {"tuxio_agent_sandbox_cpu_seconds", "tuxio_agent_sandbox_oom_kills"}
    unlisted = []
    for name in defined_metrics():
        # prometheus_client names a counter's family without _total; its samples have it.
        shown = f"{name}_total" if name in counters or f"`{name}_total`" in page else name
        if f"`{shown}`" not in page:
            unlisted.append(name)
    assert not unlisted, unlisted


async def test_the_aiohttp_timer_labels_by_route_template_and_skips_streams() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer
    from prometheus_client import Histogram

    from tuxio.common.metrics import metrics_handler, request_timer

    registry = CollectorRegistry()
    histogram = Histogram("t_seconds", "t", ["method", "route", "code"], registry=registry)

    async def thing(request: web.Request) -> web.Response:
        if request.match_info["name"] == "missing":
            raise web.HTTPNotFound()
        return web.json_response({})

    app = web.Application(middlewares=[request_timer(histogram)])
    app.router.add_get("/t/{name}", thing)
    app.router.add_get("/metrics", metrics_handler(registry))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/t/visitor-1")).status == 200
        assert (await client.get("/t/missing")).status == 404
        assert (await client.get("/elsewhere")).status == 404
        assert (await client.get("/t/x", headers={"Upgrade": "websocket"})).status == 200
        body = await (await client.get("/metrics")).text()

    def count(route: str, code: str) -> float:
        labels = {"method": "GET", "route": route, "code": code}
        return registry.get_sample_value("t_seconds_count", labels) or 0.0

    assert count("/t/{name}", "200") == 1  # the upgrade is a stream: not timed
    assert count("/t/{name}", "404") == 1
    assert count("unmatched", "404") == 1
    assert "visitor-1" not in body and "t_seconds_bucket" in body
