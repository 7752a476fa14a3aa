"""Sandboxes end to end: kubectl -> API server -> operator -> agent -> LXC, and back."""

from __future__ import annotations

import json
import signal
from typing import Any

import kubernetes

from tests.e2e.conftest import (
    GROUP,
    ROOT,
    VERSION,
    Cluster,
    Host,
    Operator,
    condition_status,
    get_sandbox,
    gone,
    host_ready,
    sandbox,
    wait_phase,
)
from tests.support import cgroup_value, memory_limit_key, wait_until

Custom = kubernetes.client.CustomObjectsApi


def containers_of(host: Host, uid: str) -> list[dict[str, Any]]:
    with host.agent.client() as http:
        items: list[dict[str, Any]] = http.get(
            "/v1/containers", params={"label": f"tux.io/sandbox-uid={uid}"}
        ).json()["items"]
    return items


def agent_container(host: Host, name: str) -> dict[str, Any] | None:
    with host.agent.client() as http:
        response = http.get(f"/v1/containers/{name}")
    return response.json() if response.status_code == 200 else None


def test_sample_sandbox_end_to_end(
    cluster: Cluster, custom: Custom, host: Host, namespace: str
) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", str(ROOT / "manifests" / "samples" / "sandbox.yaml")
    )
    waited = cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "sandbox/visitor-42", "--timeout=60s"
    )
    assert "condition met" in waited.stdout
    body = get_sandbox(custom, namespace, "visitor-42")
    status = body["status"]
    assert status["phase"] == "Running"
    assert status["host"] == host.name
    assert status["template"] == "busybox"
    assert status["expiresAt"] is not None
    assert status["observedGeneration"] == body["metadata"]["generation"]
    assert condition_status(body, "Scheduled") == "True"
    # The decision went to the API before the agent was asked (the annotation, with our
    # finalizer; kopf's is there for the TTL daemon only).
    annotations = body["metadata"]["annotations"]
    decided = json.loads(annotations["tux.io/assignment"])
    assert (decided["host"], decided["containerName"]) == (host.name, status["containerName"])
    assert sorted(body["metadata"]["finalizers"]) == ["kopf.tux.io/finalizer", "tux.io/container"]
    # Level-triggered on observedGeneration: no diff base or handler progress of kopf's.
    assert not [a for a in annotations if a.startswith("kopf.tux.io/")], annotations
    assert "lastHandledConfiguration" not in status
    # The container is on the host, labelled with the Sandbox's UID, with the limits asked for.
    [container] = containers_of(host, body["metadata"]["uid"])
    assert container["name"] == status["containerName"]
    assert container["state"] == "running"
    assert container["limits"]["pids"] == 128
    assert cgroup_value(container["pid"], memory_limit_key()) == str(256 * 2**20)
    assert status["cpuset"] == container["limits"]["cpuset"]
    # kubectl get sbx shows the documented columns.
    table = cluster.kubectl("get", "sbx", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "PHASE", "HOST", "TEMPLATE", "READY", "AGE", "EXPIRES"]
    assert table[1].split()[:5] == ["visitor-42", "Running", host.name, "busybox", "True"]
    # An Event for each step.
    events = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "-o",
        "json",
        "--field-selector",
        "involvedObject.name=visitor-42",
    ).stdout
    # One Event for the new Sandbox, telling both the placement and the result.
    running = [e for e in json.loads(events)["items"] if e["reason"] == "Running"]
    assert len(running) == 1
    assert "HostChosen: least loaded" in running[0]["message"], running[0]["message"]
    assert status["containerName"] in running[0]["message"]
    # A command runs in it.
    with host.agent.client() as http:
        ran = http.post(
            f"/v1/containers/{status['containerName']}/exec", json={"argv": ["uname", "-s"]}
        ).json()
    assert ran["stdout"] == "Linux\n"
    # Deletion destroys the container, then the finalizer lets go.
    cluster.kubectl("delete", "sandbox", "visitor-42", "-n", namespace, "--timeout=60s")
    assert gone(custom, namespace, "visitor-42")
    assert agent_container(host, status["containerName"]) is None


def test_limits_change_live(cluster: Cluster, custom: Custom, host: Host, namespace: str) -> None:
    cluster.apply(
        sandbox("live", template="busybox", resources={"memory": "128Mi", "pids": 100}),
        "-n",
        namespace,
    )
    first = wait_phase(custom, namespace, "live", "Running")
    container = agent_container(host, first["status"]["containerName"])
    assert container is not None
    pid = container["pid"]
    cluster.kubectl(
        "patch",
        "sandbox",
        "live",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"resources":{"memory":"200Mi","pids":50}}}',
    )
    # Both land in one agent call, one cgroup file after the other: waited for together.
    wait_until(
        lambda: (
            cgroup_value(pid, "pids.max") == "50"
            and cgroup_value(pid, memory_limit_key()) == str(200 * 2**20)
        ),
        timeout=30,
    )
    after = wait_until(
        lambda: (
            (b := get_sandbox(custom, namespace, "live"))["status"].get("observedGeneration") == 2
            and b
        )
    )
    assert isinstance(after, dict)
    assert agent_container(host, first["status"]["containerName"])["pid"] == pid  # type: ignore[index]


def test_stop_and_start(cluster: Cluster, custom: Custom, host: Host, namespace: str) -> None:
    cluster.apply(sandbox("toggle", template="busybox"), "-n", namespace)
    running = wait_phase(custom, namespace, "toggle", "Running")
    name = running["status"]["containerName"]
    cluster.kubectl(
        "patch",
        "sandbox",
        "toggle",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"state":"Stopped"}}',
    )
    stopped = wait_phase(custom, namespace, "toggle", "Stopped")
    assert condition_status(stopped, "Ready") == "False"
    assert agent_container(host, name)["state"] == "stopped"  # type: ignore[index]
    cluster.kubectl(
        "patch",
        "sandbox",
        "toggle",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"state":"Running"}}',
    )
    wait_phase(custom, namespace, "toggle", "Running")
    assert agent_container(host, name)["state"] == "running"  # type: ignore[index]


def test_ttl_expiry_deletes(cluster: Cluster, custom: Custom, host: Host, namespace: str) -> None:
    cluster.apply(sandbox("brief", template="busybox", lifetime={"ttlSeconds": 4}), "-n", namespace)
    body = wait_phase(custom, namespace, "brief", "Running")
    assert body["status"]["expiresAt"]
    wait_until(lambda: gone(custom, namespace, "brief"), timeout=60)
    assert agent_container(host, body["status"]["containerName"]) is None


def test_vanished_container_is_recreated(
    cluster: Cluster, custom: Custom, host: Host, namespace: str
) -> None:
    cluster.apply(sandbox("phoenix", template="busybox"), "-n", namespace)
    body = wait_phase(custom, namespace, "phoenix", "Running")
    name = body["status"]["containerName"]
    old_pid = agent_container(host, name)["pid"]  # type: ignore[index]
    with host.agent.client() as http:
        assert http.delete(f"/v1/containers/{name}").json()["deleted"] is True

    def back() -> bool:
        found = agent_container(host, name)
        return bool(found and found["state"] == "running" and found["pid"] != old_pid)

    wait_until(back, timeout=30)
    assert get_sandbox(custom, namespace, "phoenix")["status"]["phase"] == "Running"


def test_restart_policy_never_fails(
    cluster: Cluster, custom: Custom, host: Host, namespace: str
) -> None:
    cluster.apply(sandbox("once", template="busybox", restartPolicy="Never"), "-n", namespace)
    body = wait_phase(custom, namespace, "once", "Running")
    with host.agent.client() as http:
        http.delete(f"/v1/containers/{body['status']['containerName']}")
    failed = wait_phase(custom, namespace, "once", "Failed", timeout=30)
    ready = next(c for c in failed["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "ContainerVanished"
    assert agent_container(host, body["status"]["containerName"]) is None


def test_orphan_is_swept(cluster: Cluster, host: Host, operator: Operator) -> None:
    orphan = "sbx-00000000-0000-4000-8000-00000000dead"
    with host.agent.client() as http:
        http.put(
            f"/v1/containers/{orphan}",
            json={
                "template": "busybox",
                "labels": {
                    "tux.io/sandbox-uid": "00000000-0000-4000-8000-00000000dead",
                    "tux.io/managed-by": "tuxio-operator",
                },
            },
        ).raise_for_status()
        # A container that is not the operator's is left alone.
        http.put(
            "/v1/containers/not-ours", json={"template": "busybox", "state": "stopped"}
        ).raise_for_status()
    try:
        wait_until(lambda: agent_container(host, orphan) is None, timeout=30)
        assert agent_container(host, "not-ours") is not None
    finally:
        with host.agent.client() as http:
            http.delete("/v1/containers/not-ours")


def test_unschedulable_waits_with_a_reason(
    cluster: Cluster, custom: Custom, host: Host, namespace: str
) -> None:
    cluster.apply(sandbox("nowhere", template="debian-nonesuch"), "-n", namespace)

    def explained() -> dict[str, Any] | None:
        body = get_sandbox(custom, namespace, "nowhere")
        scheduled = [
            c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == "Scheduled"
        ]
        return body if scheduled and scheduled[0]["reason"] == "Unschedulable" else None

    body = wait_until(explained, timeout=30)
    assert isinstance(body, dict)
    assert body["status"]["phase"] == "Pending"
    scheduled = next(c for c in body["status"]["conditions"] if c["type"] == "Scheduled")
    assert "without template debian-nonesuch" in scheduled["message"]


def test_operator_killed_mid_creation_converges(
    cluster: Cluster, custom: Custom, host: Host, operator: Operator, namespace: str
) -> None:
    names = [f"storm-{i}" for i in range(8)]
    for name in names:
        cluster.apply(sandbox(name, template="busybox"), "-n", namespace)
    # Kill it as soon as the first decisions are recorded, in the middle of the creations.
    wait_until(
        lambda: any(
            (get_sandbox(custom, namespace, n).get("status") or {}).get("host") for n in names
        ),
        timeout=30,
        interval=0.01,
    )
    operator.stop(signal.SIGKILL)
    operator.start()
    for name in names:
        wait_phase(custom, namespace, name, "Running", timeout=60)
    for name in names:
        uid = get_sandbox(custom, namespace, name)["metadata"]["uid"]
        assert len(containers_of(host, uid)) == 1, f"{name} must have exactly one container"


def test_agent_down_host_not_ready_then_lost_then_back(
    cluster: Cluster, custom: Custom, host: Host, operator: Operator, namespace: str
) -> None:
    cluster.apply(sandbox("survivor", template="busybox"), "-n", namespace)
    body = wait_phase(custom, namespace, "survivor", "Running")
    host.agent.stop(signal.SIGKILL)
    try:
        wait_until(lambda: not host_ready(custom, host.name), timeout=30)
        hostobj = custom.get_cluster_custom_object(GROUP, VERSION, "sandboxhosts", host.name)
        ready = next(c for c in hostobj["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "AgentUnreachable"
        lost = wait_phase(custom, namespace, "survivor", "Lost", timeout=30)
        assert (
            next(c for c in lost["status"]["conditions"] if c["type"] == "Ready")["reason"]
            == "HostLost"
        )
    finally:
        host.agent.start()
    wait_until(lambda: host_ready(custom, host.name), timeout=30)
    back = wait_phase(custom, namespace, "survivor", "Running", timeout=30)
    # The container kept running all along: same one, same process.
    assert back["status"]["containerName"] == body["status"]["containerName"]


def test_deleting_with_host_gone_for_good_does_not_hang(
    cluster: Cluster, custom: Custom, host: Host, namespace: str
) -> None:
    from tests.e2e.conftest import register_host
    from tests.support import destroy_everything, make_agent

    agent = make_agent("doomed", ["--reserved-cpus", "0"])
    agent.start()
    doomed = register_host(cluster, "doomed", agent, labels={"tux.io/test": "doomed"})
    try:
        wait_until(lambda: host_ready(custom, "doomed"), timeout=30)
        cluster.apply(
            sandbox(
                "stranded",
                template="busybox",
                placement={"hostSelector": {"tux.io/test": "doomed"}},
            ),
            "-n",
            namespace,
        )
        body = wait_phase(custom, namespace, "stranded", "Running")
        assert body["status"]["host"] == "doomed"
        agent.stop(signal.SIGKILL)
        wait_phase(custom, namespace, "stranded", "Lost", timeout=30)
        cluster.kubectl("delete", "sandbox", "stranded", "-n", namespace, "--timeout=30s")
        assert gone(custom, namespace, "stranded")
    finally:
        cluster.kubectl("delete", "sandboxhost", doomed.name, "--ignore-not-found")
        agent.stop()
        destroy_everything(agent)
