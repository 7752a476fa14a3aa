"""Limits are real: fork bombs, memory hogs, root, network, cores and the start-up burst."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import httpx

from tests.support import Agent, cgroup_dir, cgroup_value, host_uid, is_v2, pids_refused, wait_until


def put(http: httpx.Client, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    response = http.put(f"/v1/containers/{name}", json=spec)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def run(
    http: httpx.Client, name: str, argv: list[str], timeout: float = 30, **extra: Any
) -> dict[str, Any]:
    response = http.post(
        f"/v1/containers/{name}/exec", json={"argv": argv, "timeoutSeconds": timeout, **extra}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_fork_bomb_hits_pids_limit(http: httpx.Client, agent: Agent, name: str) -> None:
    status = put(http, name, {"template": "busybox", "limits": {"pids": 48, "nproc": 4096}})
    pid = status["pid"]
    # The bomb is lit in a subshell, and the exec's own shell then becomes the sleep (exec,
    # no fork): it needs no pid once the bomb has them all. Lit by the exec's shell itself, a
    # fork of the bomb's first pipeline (or of the sleep) could meet the limit, and the shell
    # ended at once instead of at the exec's timeout.
    bomb = "(bomb() { bomb | bomb & }; bomb); exec sleep 600"
    with concurrent.futures.ThreadPoolExecutor(1) as pool, agent.client() as other:
        running = pool.submit(run, other, name, ["sh", "-c", bomb], 20)
        # While it runs, forks are refused at the limit, which holds.
        wait_until(lambda: pids_refused(pid) > 0, timeout=60)
        assert int(cgroup_value(pid, "pids.current")) <= 48
        # The agent keeps answering.
        assert http.get("/healthz").status_code == 200
        assert http.get(f"/v1/containers/{name}").json()["state"] == "running"
        result = running.result()
    assert result["timedOut"] is True, result
    # The exec's end killed the whole bomb (everything in its cgroup): only init is left, and
    # the container is usable as it was.
    wait_until(lambda: int(cgroup_value(pid, "pids.current")) == 1, timeout=60)
    assert run(http, name, ["echo", "alive"])["stdout"] == "alive\n"


def test_memory_hog_is_oom_killed_in_its_cgroup(http: httpx.Client, name: str) -> None:
    status = put(http, name, {"template": "busybox", "limits": {"memory": "32Mi"}})
    pid = status["pid"]
    # Grow a shell variable to ~100 MB; the kernel kills it inside the container's cgroup.
    hog = "x=$(head -c 104857600 /dev/zero | tr '\\0' a); echo survived ${#x}"
    result = run(http, name, ["sh", "-c", hog], timeout=60)
    assert "survived" not in result["stdout"]
    assert result["exitCode"] != 0
    if is_v2():
        events = (cgroup_dir(pid, "memory") / "memory.events").read_text()
        assert int(events.split("oom_kill ")[1].split()[0]) > 0
    else:
        control = (cgroup_dir(pid, "memory") / "memory.oom_control").read_text()
        assert int(control.split("oom_kill ")[1].split()[0]) > 0
    # Only the hog died: init and the agent are fine.
    assert Path(f"/proc/{pid}").exists()
    assert http.get(f"/v1/containers/{name}").json()["usage"]["memoryPeakBytes"] <= 32 * 2**20


def test_root_inside_is_not_root_outside(http: httpx.Client, agent: Agent, name: str) -> None:
    status = put(http, name, {"template": "busybox"})
    assert run(http, name, ["id", "-u"])["stdout"].strip() == "0"
    assert host_uid(status["pid"]) == 100000
    assert run(http, name, ["touch", "/root/made-inside"])["exitCode"] == 0
    made = agent.lxcpath / name / "overlay" / "delta" / "root" / "made-inside"
    assert made.stat().st_uid == 100000
    # Container root cannot load modules or reach host devices.
    assert run(http, name, ["mknod", "/tmp/sda", "b", "8", "0"])["exitCode"] != 0
    denied = run(http, name, ["cat", "/proc/sys/kernel/hostname"])
    assert denied["stdout"].strip() == name  # its own UTS namespace


def test_no_network_unless_asked(http: httpx.Client, name: str) -> None:
    put(http, name, {"template": "busybox"})
    interfaces = run(http, name, ["ls", "/sys/class/net"])["stdout"].split()
    assert interfaces == ["lo"]


def test_containers_spread_over_cores(http: httpx.Client, name: str) -> None:
    other = f"{name[:50]}-b"
    try:
        first = put(http, name, {"template": "busybox", "limits": {"cpus": 1}})
        second = put(http, other, {"template": "busybox", "limits": {"cpus": 1}})
        host = http.get("/v1/host").json()["cpus"]["allocation"]
        if host["0"] == host["1"]:
            assert first["limits"]["cpuset"] != second["limits"]["cpuset"]
        both = put(http, name, {"template": "busybox", "limits": {"cpus": 2}})
        assert both["limits"]["cpuset"] == "0-1"
        assert cgroup_value(both["pid"], "cpuset.cpus") == "0-1"
    finally:
        http.delete(f"/v1/containers/{other}")


def test_burst_then_narrow(http: httpx.Client, name: str) -> None:
    spec = {"template": "busybox", "limits": {"cpus": 1, "burstCpuSeconds": 0.5}}
    status = put(http, name, spec)
    pid = status["pid"]
    assigned = status["burst"]["assignedCpuset"]
    assert status["burst"]["active"] is True
    assert cgroup_value(pid, "cpuset.cpus") == "0-1", "a burst starts on all shared cores"
    # Burn CPU until the agent narrows the container to its own core (seen from inside as the
    # shell's allowed cores), however long that takes on this machine, within the deadline.
    burn = (
        'while grep -q -E "^Cpus_allowed_list:[[:space:]]+$1$" /proc/self/status; do '
        "i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done; done"
    )
    burnt = run(http, name, ["sh", "-c", burn, "sh", "0-1"], timeout=120)
    assert burnt["timedOut"] is False and burnt["exitCode"] == 0, burnt
    wait_until(lambda: cgroup_value(pid, "cpuset.cpus") == assigned, timeout=30)
    after = http.get(f"/v1/containers/{name}").json()
    assert after["burst"]["active"] is False
    assert after["usage"]["cpuSeconds"] >= 0.5
    assert after["limits"]["cpuset"] == assigned
    # A PUT after the burst does not widen it again.
    assert put(http, name, spec)["limits"]["cpuset"] == assigned
