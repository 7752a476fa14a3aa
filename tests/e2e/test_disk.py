"""Disk end to end: spec.resources.disk and inodes reach the agent and hold in the container;
the host's free disk shows in SandboxHost status; the scheduler places disk like memory."""

from __future__ import annotations

from typing import Any

import kubernetes

from tests.e2e.conftest import Cluster, Host, get_sandbox, sandbox, wait_phase
from tests.support import wait_until

Custom = kubernetes.client.CustomObjectsApi
DISK = 64 * 2**20


def host_status(custom: Custom, name: str) -> dict[str, Any]:
    body: dict[str, Any] = custom.get_cluster_custom_object(
        "tux.io", "v1alpha1", "sandboxhosts", name
    )
    return body.get("status") or {}


def test_disk_limits_hold_and_show_in_the_statuses(
    cluster: Cluster, custom: Custom, host: Host, namespace: str
) -> None:
    cluster.apply(
        sandbox("small", template="busybox", resources={"disk": "64Mi", "inodes": 2048}),
        "-n",
        namespace,
    )
    body = wait_phase(custom, namespace, "small", "Running")
    container = body["status"]["containerName"]
    with host.agent.client() as http:
        seen = http.get(f"/v1/containers/{container}").json()
        assert seen["spec"]["limits"]["disk"] == DISK
        assert seen["disk"]["backend"] == "ext4-image"
        assert 0 < seen["disk"]["limitBytes"] <= DISK
        assert seen["disk"]["limitInodes"] == 2048
        filled = http.post(
            f"/v1/containers/{container}/exec",
            json={"argv": ["dd", "if=/dev/zero", "of=/fill", "bs=1M", "count=256"]},
        ).json()
    assert "No space left on device" in filled["stderr"]

    # The prober writes what the agent counted into the Sandbox's usage.
    def usage() -> dict[str, Any] | None:
        found = (get_sandbox(custom, namespace, "small").get("status") or {}).get("usage") or {}
        return found if found.get("diskBytes", 0) > DISK // 2 else None

    written = wait_until(usage, timeout=120)
    assert isinstance(written, dict)
    assert written["diskBytes"] <= written["diskLimitBytes"] <= DISK
    assert written["inodesLimit"] == 2048

    # The host's status carries its disk, and what the scheduler placed on it.
    status = host_status(custom, host.name)
    capacity = status["capacity"]
    assert capacity["diskBackend"] == "ext4-image"
    assert capacity["diskFreeBytes"] > 0 and capacity["diskFreeInodes"] > 0
    assert capacity["diskBytes"] > 0 and capacity["diskBelowReserve"] is False
    assert status["allocation"]["diskBytes"] >= DISK


def test_a_sandbox_asking_more_disk_than_any_host_has_waits_with_a_reason(
    cluster: Cluster, custom: Custom, host: Host, namespace: str
) -> None:
    capacity = host_status(custom, host.name)["capacity"]["diskBytes"]
    too_much = f"{capacity // 2**30 + 1}Gi"
    cluster.apply(
        sandbox("huge", template="busybox", resources={"disk": too_much}), "-n", namespace
    )

    def explained() -> dict[str, Any] | None:
        body = get_sandbox(custom, namespace, "huge")
        scheduled = [
            c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == "Scheduled"
        ]
        return body if scheduled and scheduled[0]["reason"] == "Unschedulable" else None

    body = wait_until(explained, timeout=60)
    assert isinstance(body, dict)
    assert body["status"]["phase"] == "Pending"
    scheduled = next(c for c in body["status"]["conditions"] if c["type"] == "Scheduled")
    assert "out of disk" in scheduled["message"]
    assert not body["status"].get("host")
