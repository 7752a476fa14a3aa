"""The agent's /metrics on real LXC: each running container's usage as its cgroup tells it
(an OOM kill counted, a written file in its disk), its series gone once it is deleted; host
disk and inodes; clone, start and request timings."""

from __future__ import annotations

import os

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.agent.test_isolation import put, run
from tests.support import Agent, cgroup_value, is_v2, wait_until

from .conftest import agent_with


def scrape(agent: Agent) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = httpx.get(f"http://127.0.0.1:{agent.metrics_port}/metrics", timeout=30).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def test_metrics_read_each_container_from_its_cgroup(agent: Agent, name: str) -> None:
    with agent.client() as http:
        status = put(http, name, {"template": "busybox", "limits": {"memory": "32Mi"}})
        pid = status["pid"]
        hog = "x=$(head -c 104857600 /dev/zero | tr '\\0' a); echo survived ${#x}"
        assert "survived" not in run(http, name, ["sh", "-c", hog], timeout=60)["stdout"]
    me = (("container", name),)
    got = scrape(agent)
    assert got[("tuxio_agent_sandbox_oom_kills_total", me)] >= 1
    assert got[("tuxio_agent_sandbox_memory_peak_bytes", me)] <= 32 * 2**20
    assert got[("tuxio_agent_sandbox_memory_bytes", me)] > 0
    assert got[("tuxio_agent_sandbox_pids", me)] >= 1
    # The same counter the kernel keeps, read at the scrape (no cache to go stale).
    usage = cgroup_value(pid, "cpu.stat" if is_v2() else "cpuacct.usage")
    kernel = int(usage.split()[1]) / 1e6 if is_v2() else int(usage) / 1e9
    assert 0 < got[("tuxio_agent_sandbox_cpu_seconds_total", me)] <= kernel + 1e-6
    st = os.statvfs(agent.lxcpath)
    assert got[("tuxio_agent_host_inodes", ())] == st.f_files
    assert got[("tuxio_agent_host_disk_size_bytes", ())] == st.f_blocks * st.f_frsize
    assert got[("tuxio_agent_clone_duration_seconds_count", (("template", "busybox"),))] >= 1
    assert got[("tuxio_agent_start_duration_seconds_count", (("template", "busybox"),))] >= 1
    put_route = (("code", "200"), ("method", "PUT"), ("route", "/v1/containers/{name}"))
    assert got[("tuxio_agent_request_duration_seconds_count", put_route)] >= 1
    assert not any(name in dict(labels).get("route", "") for _, labels in got)

    with agent.client() as http:
        assert http.delete(f"/v1/containers/{name}").status_code == 200
    assert ("tuxio_agent_sandbox_pids", me) not in scrape(agent)


def test_disk_use_of_the_writable_layer_is_walked(name: str) -> None:
    with agent_with("diskwalk", disk_usage_seconds=0.5) as agent, agent.client() as http:
        put(http, name, {"template": "busybox"})
        written = run(http, name, ["dd", "if=/dev/zero", "of=/root/blob", "bs=1M", "count=4"])
        assert written["exitCode"] == 0, written
        me = (("container", name),)
        wait_until(
            lambda: scrape(agent).get(("tuxio_agent_sandbox_disk_bytes", me), 0) >= 4 * 2**20,
            timeout=60,
        )
        http.delete(f"/v1/containers/{name}")
