"""SandboxPools end to end: fill, claim, replenish, scale, change, delete; claim storms."""

from __future__ import annotations

import json
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
import pytest

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
    sandbox,
    wait_phase,
)
from tests.support import wait_until
from tuxio.operator.labels import ASSIGNMENT

Custom = kubernetes.client.CustomObjectsApi


def pool(name: str, replicas: int, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SandboxPool",
        "metadata": {"name": name},
        "spec": {"template": "busybox", "replicas": replicas, **spec},
    }


def get_pool(custom: Custom, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "sandboxpools", name
    )
    return found


def warm_containers(host: Host, pool_uid: str) -> list[dict[str, Any]]:
    with host.agent.client() as http:
        answer = http.get("/v1/containers", params={"label": f"tux.io/pool-uid={pool_uid}"})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def wait_ready_replicas(
    custom: Custom, namespace: str, name: str, count: int, timeout: float = 60
) -> dict[str, Any]:
    def filled() -> dict[str, Any] | None:
        body = get_pool(custom, namespace, name)
        status = body.get("status") or {}
        ok = status.get("readyReplicas") == count and status.get("replicas") == count
        return body if ok else None

    found = wait_until(filled, timeout=timeout)
    assert isinstance(found, dict)
    return found


def test_fill_claim_replenish(cluster: Cluster, custom: Custom, host: Host, namespace: str) -> None:
    cluster.kubectl(
        "apply", "-n", namespace, "-f", str(ROOT / "manifests" / "samples" / "sandboxpool.yaml")
    )
    cluster.kubectl("scale", "sbxpool/busybox-warm", "-n", namespace, "--replicas=3")
    body = wait_ready_replicas(custom, namespace, "busybox-warm", 3)
    assert condition_status(body, "Ready") == "True"
    uid = body["metadata"]["uid"]
    before = {c["name"] for c in warm_containers(host, uid)}
    assert len(before) == 3
    table = cluster.kubectl("get", "sbxpool", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "TEMPLATE", "DESIRED", "CURRENT", "READY", "AGE"]
    assert table[1].split()[:5] == ["busybox-warm", "busybox", "3", "3", "3"]

    cluster.kubectl(
        "apply",
        "-n",
        namespace,
        "-f",
        str(ROOT / "manifests" / "samples" / "sandbox-from-pool.yaml"),
    )
    cluster.kubectl(
        "wait", "-n", namespace, "--for=condition=Ready", "sandbox/visitor-43", "--timeout=60s"
    )
    claimed = get_sandbox(custom, namespace, "visitor-43")
    status = claimed["status"]
    assert status["fromPool"] == "busybox-warm"
    assert status["containerName"] in before
    scheduled = next(c for c in status["conditions"] if c["type"] == "Scheduled")
    assert scheduled["reason"] == "ClaimedFromPool"
    # The adopted container now carries the Sandbox's identity and its own limits.
    with host.agent.client() as http:
        container = http.get(f"/v1/containers/{status['containerName']}").json()
    assert container["labels"]["tux.io/sandbox-uid"] == claimed["metadata"]["uid"]
    assert "tux.io/pool-uid" not in container["labels"]
    assert container["limits"]["memory"] == 128 * 2**20  # the Sandbox's, not the pool's 256Mi
    assert container["limits"]["pids"] == 64

    # The pool replenishes to 3 warm containers besides the adopted one: waited for on the
    # agent itself, then the status must say so too (it may lag, never run ahead).
    def replenished() -> set[str] | None:
        names = {c["name"] for c in warm_containers(host, uid) if c["state"] == "running"}
        return names if len(names) == 3 else None

    after = wait_until(replenished, timeout=60)
    assert isinstance(after, set)
    assert status["containerName"] not in after
    wait_ready_replicas(custom, namespace, "busybox-warm", 3)


def test_scale_up_and_down(cluster: Cluster, custom: Custom, host: Host, namespace: str) -> None:
    cluster.apply(pool("elastic", 2), "-n", namespace)
    uid = wait_ready_replicas(custom, namespace, "elastic", 2)["metadata"]["uid"]
    cluster.apply(sandbox("keeper", poolRef={"name": "elastic"}), "-n", namespace)
    kept = wait_phase(custom, namespace, "keeper", "Running")
    assert kept["status"]["fromPool"] == "elastic"
    cluster.kubectl("scale", "sbxpool/elastic", "-n", namespace, "--replicas=5")
    wait_ready_replicas(custom, namespace, "elastic", 5)
    assert len(warm_containers(host, uid)) == 5
    cluster.kubectl("scale", "sbxpool/elastic", "-n", namespace, "--replicas=1")
    wait_ready_replicas(custom, namespace, "elastic", 1)
    wait_until(lambda: len(warm_containers(host, uid)) == 1, timeout=30)
    # Scaling down never touches a claimed container.
    assert get_sandbox(custom, namespace, "keeper")["status"]["phase"] == "Running"
    with host.agent.client() as http:
        assert (
            http.get(f"/v1/containers/{kept['status']['containerName']}").json()["state"]
            == "running"
        )


def test_spec_change_replaces_warm_containers(
    cluster: Cluster, custom: Custom, host: Host, namespace: str
) -> None:
    cluster.apply(pool("changing", 2, resources={"memory": "64Mi"}), "-n", namespace)
    uid = wait_ready_replicas(custom, namespace, "changing", 2)["metadata"]["uid"]
    old = {c["name"] for c in warm_containers(host, uid)}
    cluster.kubectl(
        "patch",
        "sbxpool",
        "changing",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"resources":{"memory":"96Mi"}}}',
    )

    def replaced() -> bool:
        now = warm_containers(host, uid)
        return (
            len(now) == 2
            and not ({c["name"] for c in now} & old)
            and all(c["limits"]["memory"] == 96 * 2**20 for c in now)
        )

    wait_until(replaced, timeout=60)
    # A template no host has: the pool says why it cannot fill, and the old containers go.
    cluster.kubectl(
        "patch",
        "sbxpool",
        "changing",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        '{"spec":{"template":"nonesuch"}}',
    )

    def stuck() -> dict[str, Any] | None:
        body = get_pool(custom, namespace, "changing")
        ready = next(
            (c for c in (body.get("status") or {}).get("conditions", []) if c["type"] == "Ready"),
            {},
        )
        return body if ready.get("reason") == "TemplateMissing" else None

    wait_until(stuck, timeout=30)
    wait_until(lambda: warm_containers(host, uid) == [], timeout=30)


def test_pool_deletion_keeps_adopted_sandboxes(
    cluster: Cluster, custom: Custom, host: Host, namespace: str
) -> None:
    cluster.apply(pool("doomed-pool", 3), "-n", namespace)
    uid = wait_ready_replicas(custom, namespace, "doomed-pool", 3)["metadata"]["uid"]
    cluster.apply(sandbox("adopter", poolRef={"name": "doomed-pool"}), "-n", namespace)
    adopter = wait_phase(custom, namespace, "adopter", "Running")
    cluster.kubectl("delete", "sbxpool", "doomed-pool", "-n", namespace, "--timeout=60s")
    assert warm_containers(host, uid) == []
    with host.agent.client() as http:
        container = http.get(f"/v1/containers/{adopter['status']['containerName']}").json()
    assert container["state"] == "running"
    assert get_sandbox(custom, namespace, "adopter")["status"]["phase"] == "Running"


def test_empty_pool_falls_back_to_a_cold_create(
    cluster: Cluster, custom: Custom, namespace: str
) -> None:
    cluster.apply(pool("empty", 0), "-n", namespace)
    wait_ready_replicas(custom, namespace, "empty", 0)
    cluster.apply(sandbox("cold", poolRef={"name": "empty"}), "-n", namespace)
    body = wait_phase(custom, namespace, "cold", "Running")
    assert body["status"].get("fromPool") is None
    scheduled = next(c for c in body["status"]["conditions"] if c["type"] == "Scheduled")
    assert scheduled["reason"] == "PoolEmpty"
    assert scheduled["message"].startswith("pool empty had no warm container: created cold")


def test_claim_is_stored_with_the_create(
    cluster: Cluster, custom: Custom, host: Host, namespace: str
) -> None:
    cluster.apply(pool("instant", 2), "-n", namespace)
    uid = wait_ready_replicas(custom, namespace, "instant", 2)["metadata"]["uid"]
    warm = {c["name"] for c in warm_containers(host, uid)}
    body = sandbox("first", poolRef={"name": "instant"})
    # A dry run goes through admission too, and must take nothing.
    dry = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "sandboxes", body, dry_run="All"
    )
    assert ASSIGNMENT not in (dry["metadata"].get("annotations") or {})
    made = custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "sandboxes", body)
    # The claim is in the very object the create stored: before the agent heard of it.
    decided = json.loads(made["metadata"]["annotations"][ASSIGNMENT])
    assert decided["containerName"] in warm
    assert decided["host"] == host.name
    assert "tux.io/container" in made["metadata"]["finalizers"]
    running = wait_phase(custom, namespace, "first", "Running")
    assert running["status"]["containerName"] == decided["containerName"]
    assert running["status"]["fromPool"] == "instant"
    assert "adoptIfMatch" not in running["status"]
    # Both warm containers were there for real claims: the dry run took none.
    cluster.apply(sandbox("second", poolRef={"name": "instant"}), "-n", namespace)
    second = wait_phase(custom, namespace, "second", "Running")
    assert {running["status"]["containerName"], second["status"]["containerName"]} == warm


def test_claim_of_a_refused_create_is_released(
    custom: Custom, cluster: Cluster, host: Host, namespace: str
) -> None:
    cluster.apply(pool("held", 2), "-n", namespace)
    uid = wait_ready_replicas(custom, namespace, "held", 2)["metadata"]["uid"]
    body = sandbox("twin", poolRef={"name": "held"})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "sandboxes", body)
    # The same name again: claimed at admission, then refused by the storage.
    with pytest.raises(kubernetes.client.exceptions.ApiException) as refused:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "sandboxes", body)
    assert refused.value.status == 409
    wait_phase(custom, namespace, "twin", "Running")
    # The pool refills what the refused create took; once its hold is over (3 s here) that
    # container is the pool's again, and the surplus goes: two warm containers, not three.
    wait_ready_replicas(custom, namespace, "held", 2)
    wait_until(lambda: len(warm_containers(host, uid)) == 2, timeout=60)


@pytest.mark.parametrize("etag", [None, "0123456789abcdef"])
def test_a_forged_assignment_takes_over_nothing(
    cluster: Cluster,
    custom: Custom,
    host: Host,
    operator: Operator,
    namespace: str,
    etag: str | None,
) -> None:
    """Whoever may create Sandboxes may write annotations: one naming another Sandbox's
    container must not hand it over. The first PUT of a placement never takes over a
    container of someone else (If-None-Match, or If-Match the warm container's ETag)."""
    cluster.apply(pool("guarded", 1), "-n", namespace)
    wait_ready_replicas(custom, namespace, "guarded", 1)
    cluster.apply(sandbox("owner", poolRef={"name": "guarded"}), "-n", namespace)
    owner = wait_phase(custom, namespace, "owner", "Running")
    taken = owner["status"]["containerName"]
    forged = sandbox("thief", template="busybox", resources={"memory": "200Mi"})
    assignment = {"host": host.name, "containerName": taken, "template": "busybox"}
    if etag:
        assignment["adoptIfMatch"] = etag
    forged["metadata"]["annotations"] = {ASSIGNMENT: json.dumps(assignment)}
    operator.stop()  # no claim at admission either: the forged annotation is stored as is
    try:
        cluster.apply(forged, "-n", namespace)
    finally:
        operator.start()
    thief = wait_phase(custom, namespace, "thief", "Running")
    assert thief["status"]["containerName"] != taken
    with host.agent.client() as http:
        seen = http.get(f"/v1/containers/{taken}").json()
    assert seen["labels"]["tux.io/sandbox-uid"] == owner["metadata"]["uid"]
    assert seen["limits"]["memory"] != 200 * 2**20


def _storm(cluster: Cluster, namespace: str, names: list[str], pool_name: str) -> None:
    manifests = [sandbox(n, poolRef={"name": pool_name}) for n in names]
    with ThreadPoolExecutor(10) as workers:
        list(workers.map(lambda m: cluster.apply(m, "-n", namespace), manifests))


def _assert_each_adopted_once(
    custom: Custom, host: Host, namespace: str, names: list[str]
) -> list[dict[str, Any]]:
    bodies = [wait_phase(custom, namespace, n, "Running", timeout=120) for n in names]
    containers = [b["status"]["containerName"] for b in bodies]
    assert len(set(containers)) == len(containers), "a container was adopted twice"
    with host.agent.client() as http:
        for body in bodies:
            seen = http.get(f"/v1/containers/{body['status']['containerName']}").json()
            assert seen["labels"]["tux.io/sandbox-uid"] == body["metadata"]["uid"]
            assert seen["state"] == "running"
    return bodies


def test_fifty_claims_against_twenty_warm(
    cluster: Cluster, custom: Custom, host: Host, namespace: str
) -> None:
    cluster.apply(pool("storm", 20), "-n", namespace)
    uid = wait_ready_replicas(custom, namespace, "storm", 20, timeout=120)["metadata"]["uid"]
    initial = {c["name"] for c in warm_containers(host, uid)}
    names = [f"claim-{i}" for i in range(50)]
    _storm(cluster, namespace, names, "storm")
    bodies = _assert_each_adopted_once(custom, host, namespace, names)
    warm = [b for b in bodies if b["status"].get("fromPool") == "storm"]
    cold = [b for b in bodies if not b["status"].get("fromPool")]
    assert len(warm) + len(cold) == 50
    # Every one of the 20 warm containers went to exactly one Sandbox; the pool refills during
    # the storm, so some claims may find a fresh warm container rather than a cold create.
    adopted = {b["status"]["containerName"] for b in warm}
    assert initial <= adopted
    # A warm claim adopted a container the pool made; a cold create made its own.
    assert all(name.startswith(f"pool-{uid[:8]}-") for name in adopted)
    for body in cold:
        assert body["status"]["containerName"] == f"sbx-{body['metadata']['uid']}"
        scheduled = next(c for c in body["status"]["conditions"] if c["type"] == "Scheduled")
        assert scheduled["reason"] == "PoolEmpty"
    print(json.dumps({"warm": len(warm), "cold": len(cold)}))


def test_operator_killed_during_claim_storm(
    cluster: Cluster, custom: Custom, host: Host, operator: Operator, namespace: str
) -> None:
    cluster.apply(pool("crashy", 10), "-n", namespace)
    uid = wait_ready_replicas(custom, namespace, "crashy", 10, timeout=120)["metadata"]["uid"]
    names = [f"crash-{i}" for i in range(20)]
    with ThreadPoolExecutor(1) as background:
        storm = background.submit(_storm, cluster, namespace, names, "crashy")
        wait_until(
            lambda: any(
                (get_sandbox(custom, namespace, n).get("status") or {}).get("fromPool")
                for n in names
                if not gone(custom, namespace, n)
            ),
            timeout=60,
            interval=0.01,
        )
        operator.stop(signal.SIGKILL)
        storm.result()
    operator.start()
    bodies = _assert_each_adopted_once(custom, host, namespace, names)
    # No leak: deleting the sandboxes and the pool leaves nothing of them on the host.
    cluster.kubectl("delete", "sandboxes", "--all", "-n", namespace, "--timeout=120s")
    cluster.kubectl("delete", "sbxpool", "crashy", "-n", namespace, "--timeout=60s")
    with host.agent.client() as http:
        for body in bodies:
            assert http.get(f"/v1/containers/{body['status']['containerName']}").status_code == 404
    assert warm_containers(host, uid) == []
