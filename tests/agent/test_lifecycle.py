"""Create, observe, change live, stop, start, delete; idempotence; restart; concurrency."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.support import Agent, cgroup_value, memory_limit_key, rlimit, wait_until
from tuxio.nodeagent.host import CAP_SYS_RESOURCE, has_capability

SPEC: dict[str, Any] = {
    "template": "busybox",
    "limits": {"cpus": 1, "memory": "96Mi", "pids": 100, "nofile": 2048, "nproc": 300},
    "labels": {"tux.io/sandbox-uid": "0b6c7a52-1d4e-4a55-9b0e-2f7f1b9e7c11", "team": "web"},
}


def put(http: httpx.Client, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    response = http.put(f"/v1/containers/{name}", json=spec)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_create_and_observe(http: httpx.Client, agent: Agent, name: str) -> None:
    status = put(http, name, SPEC)
    assert status["state"] == "running"
    pid = status["pid"]
    assert pid > 1
    # What the agent reports is what the kernel has.
    assert status["limits"]["cpuset"] == cgroup_value(pid, "cpuset.cpus")
    assert status["limits"]["cpus"] == 1
    assert (
        str(status["limits"]["memory"]) == cgroup_value(pid, memory_limit_key()) == str(96 * 2**20)
    )
    assert cgroup_value(pid, "pids.max") == "100" == str(status["limits"]["pids"])
    assert rlimit(pid, "Max open files") == ("2048", "2048")
    assert rlimit(pid, "Max processes") == ("300", "300")
    assert status["limits"]["nofile"] == 2048
    assert status["labels"] == SPEC["labels"]
    assert status["template"] == "busybox"
    assert status["usage"]["pids"] >= 1
    assert status["usage"]["memoryBytes"] > 0
    assert status["startedAt"] is not None and status["createdAt"] is not None
    # GET agrees with the PUT's answer.
    again = http.get(f"/v1/containers/{name}").json()
    assert again["pid"] == pid and again["limits"] == status["limits"]


def test_put_twice_changes_nothing(http: httpx.Client, agent: Agent, name: str) -> None:
    first = put(http, name, SPEC)
    directory = agent.lxcpath / name
    stamps = {f: (directory / f).stat().st_mtime_ns for f in ("config", "tuxio.json")}
    second = put(http, name, SPEC)
    assert second["pid"] == first["pid"]
    assert second["specHash"] == first["specHash"]
    assert {f: (directory / f).stat().st_mtime_ns for f in stamps} == stamps


def test_limits_change_live(http: httpx.Client, agent: Agent, name: str) -> None:
    first = put(http, name, SPEC)
    pid = first["pid"]
    changed = {
        **SPEC,
        "limits": {
            "cpus": 1,
            "memory": "160Mi",
            "memorySwap": "200Mi",
            "pids": 50,
            "nofile": 4096,
            "nproc": 400,
            "cpuQuota": 0.5,
        },
    }
    second = put(http, name, changed)
    assert second["pid"] == pid, "a limit change must not restart the container"
    assert cgroup_value(pid, memory_limit_key()) == str(160 * 2**20)
    assert cgroup_value(pid, "pids.max") == "50"
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        assert cgroup_value(pid, "cpu.max") == "50000 100000"
        assert cgroup_value(pid, "memory.swap.max") == str(40 * 2**20)
    else:
        assert cgroup_value(pid, "cpu.cfs_quota_us") == "50000"
        assert cgroup_value(pid, "memory.memsw.limit_in_bytes") == str(200 * 2**20)
    if has_capability(CAP_SYS_RESOURCE):
        assert rlimit(pid, "Max open files") == ("4096", "4096")
        assert rlimit(pid, "Max processes") == ("400", "400")
        assert second["warnings"] == []
    else:
        # Raising a hard rlimit of running processes needs CAP_SYS_RESOURCE: the answer says
        # the new value waits for the next start, and the old one is still what is in force.
        assert rlimit(pid, "Max open files") == ("2048", "2048")
        assert second["limits"]["nofile"] == 2048
        assert any(
            w.startswith("nofile 4096 applies at the next start") for w in second["warnings"]
        )
        assert any(w.startswith("nproc 400 applies at the next start") for w in second["warnings"])
        put(http, name, {**changed, "state": "stopped"})
        restarted = put(http, name, changed)
        assert rlimit(restarted["pid"], "Max open files") == ("4096", "4096")
        assert restarted["warnings"] == []
        pid = restarted["pid"]
    # Lowering applies live everywhere.
    lowered = put(
        http, name, {**changed, "limits": {**changed["limits"], "nofile": 1500, "nproc": 350}}
    )
    assert lowered["pid"] == pid
    assert rlimit(pid, "Max open files") == ("1500", "1500")
    assert rlimit(pid, "Max processes") == ("350", "350")
    assert second["limits"]["cpuQuota"] == 0.5
    assert second["limits"]["memorySwap"] == 200 * 2**20
    # Shrinking again goes through (memory before memory+swap).
    third = put(http, name, SPEC)
    assert third["pid"] == pid
    assert cgroup_value(pid, memory_limit_key()) == str(96 * 2**20)
    assert third["limits"]["cpuQuota"] is None
    # A running container's config is rendered at its next start: stopped and started
    # again, it runs with the limits of its last spec from its first instruction.
    put(http, name, {**SPEC, "state": "stopped"})
    restarted = put(http, name, SPEC)
    assert restarted["pid"] != pid
    assert cgroup_value(restarted["pid"], "pids.max") == "100"
    assert cgroup_value(restarted["pid"], memory_limit_key()) == str(96 * 2**20)
    assert "pids.max = 100" in (agent.lxcpath / name / "config").read_text()


def test_stop_start_delete(http: httpx.Client, agent: Agent, name: str) -> None:
    running = put(http, name, SPEC)
    stopped = put(http, name, {**SPEC, "state": "stopped"})
    assert stopped["state"] == "stopped"
    assert stopped["pid"] is None and stopped["limits"] is None and stopped["usage"] is None
    assert wait_until(lambda: not Path(f"/proc/{running['pid']}").exists())
    restarted = put(http, name, SPEC)
    assert restarted["state"] == "running"
    assert restarted["pid"] != running["pid"]
    assert cgroup_value(restarted["pid"], "pids.max") == "100"
    deleted = http.delete(f"/v1/containers/{name}")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert not (agent.lxcpath / name).exists()
    assert http.get(f"/v1/containers/{name}").status_code == 404
    again = http.delete(f"/v1/containers/{name}")
    assert again.status_code == 200 and again.json()["deleted"] is False


def test_list_by_label(http: httpx.Client, name: str) -> None:
    other = f"{name[:50]}-other"
    try:
        put(http, name, {**SPEC, "labels": {"pool": "alpha", "n": "1"}})
        put(http, other, {**SPEC, "state": "stopped", "labels": {"pool": "beta", "n": "1"}})
        alpha = http.get("/v1/containers", params={"label": "pool=alpha"}).json()["items"]
        assert [c["name"] for c in alpha] == [name]
        both = http.get("/v1/containers", params=[("label", "n=1")]).json()["items"]
        assert {c["name"] for c in both} >= {name, other}
        none = http.get("/v1/containers", params=[("label", "pool=alpha"), ("label", "n=2")]).json()
        assert none["items"] == []
        states = {c["name"]: c["state"] for c in both}
        assert states[name] == "running" and states[other] == "stopped"
    finally:
        http.delete(f"/v1/containers/{other}")


def test_template_is_immutable(http: httpx.Client, agent: Agent, name: str) -> None:
    put(http, name, {**SPEC, "state": "stopped"})
    response = http.put(f"/v1/containers/{name}", json={**SPEC, "template": "debian"})
    # debian is not built on this test host: unknown template wins over the conflict.
    assert response.status_code == 422
    (agent.data_dir / "templates" / "other").mkdir()
    try:
        (agent.data_dir / "templates" / "other" / "current").symlink_to(
            (agent.data_dir / "templates" / "busybox" / "current").resolve()
        )
        response = http.put(f"/v1/containers/{name}", json={**SPEC, "template": "other"})
        assert response.status_code == 409
        assert response.json()["reason"] == "SpecConflict"
    finally:
        (agent.data_dir / "templates" / "other" / "current").unlink()
        (agent.data_dir / "templates" / "other").rmdir()


def test_agent_restart_keeps_containers(agent: Agent, name: str) -> None:
    with agent.client() as http:
        before = put(http, name, SPEC)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        agent.stop(sig)
        assert Path(f"/proc/{before['pid']}").exists(), "containers outlive the agent"
        agent.start()
        with agent.client() as http:
            after = http.get(f"/v1/containers/{name}").json()
            assert after["pid"] == before["pid"]
            assert after["labels"] == SPEC["labels"]
            assert after["createdAt"] == before["createdAt"]
            assert after["limits"] == before["limits"]
            listed = http.get("/v1/containers", params={"label": "team=web"}).json()["items"]
            assert name in [c["name"] for c in listed]
            config = (agent.lxcpath / name / "config").stat().st_mtime_ns
            assert put(http, name, SPEC)["pid"] == before["pid"]
            assert (agent.lxcpath / name / "config").stat().st_mtime_ns == config


async def test_same_name_is_serialised(agent: Agent, name: str) -> None:
    async with agent.async_client() as client:
        answers = await asyncio.gather(
            *(client.put(f"/v1/containers/{name}", json=SPEC) for _ in range(8))
        )
    assert [a.status_code for a in answers] == [200] * 8
    assert len({a.json()["pid"] for a in answers}) == 1


async def test_different_names_in_parallel(agent: Agent, name: str) -> None:
    names = [f"{name[:50]}-{i}" for i in range(6)]
    with agent.client() as http:
        before = http.get("/v1/host").json()["cpus"]["allocation"]
    try:
        async with agent.async_client() as client:
            answers = await asyncio.gather(
                *(client.put(f"/v1/containers/{n}", json=SPEC) for n in names)
            )
        assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
        assert len({a.json()["pid"] for a in answers}) == 6
        # Two shared cores, six one-core containers: they spread, three on each (from an
        # even start; the least-loaded cores go first).
        with agent.client() as http:
            host = http.get("/v1/host").json()
        assert host["cpus"]["shared"] == [0, 1]
        after = host["cpus"]["allocation"]
        assert sum(after.values()) - sum(before.values()) == 6
        assert abs(after["0"] - after["1"]) <= max(1, abs(before["0"] - before["1"]))
    finally:
        async with agent.async_client() as client:
            await asyncio.gather(*(client.delete(f"/v1/containers/{n}") for n in names))


def test_host_info(http: httpx.Client, name: str) -> None:
    put(http, name, SPEC)
    host = http.get("/v1/host").json()
    assert host["cgroupVersion"] in (1, 2)
    assert host["cpus"]["total"] >= 1
    assert host["memory"]["totalBytes"] > host["memory"]["availableBytes"] > 0
    assert [t["name"] for t in host["templates"]] == ["busybox"]
    assert host["containers"] >= 1 and host["running"] >= 1
    assert len(host["load"]) == 3


def test_template_rebuild_keeps_running_containers(
    http: httpx.Client, agent: Agent, name: str
) -> None:
    import subprocess

    from tests.support import AGENT

    first = put(http, name, SPEC)
    old_lower = (agent.data_dir / "templates" / "busybox" / "current").resolve()
    subprocess.run(
        [AGENT, "--data-dir", str(agent.data_dir), "template", "build", "busybox"],
        check=True,
        capture_output=True,
    )
    new_lower = (agent.data_dir / "templates" / "busybox" / "current").resolve()
    assert new_lower != old_lower
    assert old_lower.exists(), "a version a container still uses is not pruned"
    exec_ok = http.post(f"/v1/containers/{name}/exec", json={"argv": ["ls", "/bin/busybox"]}).json()
    assert exec_ok["exitCode"] == 0
    assert put(http, name, SPEC)["pid"] == first["pid"]


def test_stopped_behind_the_agents_back_is_seen(
    http: httpx.Client, agent: Agent, name: str
) -> None:
    """The agent remembers a running container's init; a container stopped or restarted
    outside the agent must still be reported as it is, and a PUT must start it again."""
    import subprocess

    first = put(http, name, SPEC)
    assert http.get(f"/v1/containers/{name}").json()["pid"] == first["pid"]  # remembered
    subprocess.run(
        ["lxc-stop", "-P", str(agent.lxcpath), "-n", name, "-k"], check=True, capture_output=True
    )
    seen = http.get(f"/v1/containers/{name}").json()
    assert seen["state"] == "stopped" and seen["pid"] is None
    listed = http.get("/v1/containers", params={"label": f"team={SPEC['labels']['team']}"})
    mine = [c for c in listed.json()["items"] if c["name"] == name]
    assert [(c["state"], c["pid"]) for c in mine] == [("stopped", None)]
    again = put(http, name, SPEC)
    assert again["state"] == "running" and again["pid"] not in (None, first["pid"])
    # Restarted outside the agent: the new init is found, not the old one remembered.
    subprocess.run(
        ["lxc-stop", "-P", str(agent.lxcpath), "-n", name, "-k"], check=True, capture_output=True
    )
    subprocess.run(
        ["lxc-start", "-P", str(agent.lxcpath), "-n", name, "-d"], check=True, capture_output=True
    )
    listed = http.get("/v1/containers", params={"label": f"team={SPEC['labels']['team']}"})
    (in_list,) = [c for c in listed.json()["items"] if c["name"] == name]
    outside = http.get(f"/v1/containers/{name}").json()
    assert in_list["state"] == "running" and in_list["pid"] == outside["pid"]
    assert outside["state"] == "running"
    assert outside["pid"] not in (None, first["pid"], again["pid"])
    assert outside["limits"]["cpuset"] == cgroup_value(outside["pid"], "cpuset.cpus")
