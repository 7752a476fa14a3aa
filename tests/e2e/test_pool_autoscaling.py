"""Pools that size themselves, end to end: a claim storm grows the pool, idleness shrinks it
back to minReplicas, and the agent made exactly the warm containers the pool needed, with
the operator killed while the pool grew."""

from __future__ import annotations

import re
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes

from tests.e2e.conftest import (
    GROUP,
    VERSION,
    Cluster,
    Host,
    Operator,
    sandbox,
    wait_phase,
)
from tests.support import wait_until

Custom = kubernetes.client.CustomObjectsApi


def _pool(custom: Custom, namespace: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "sandboxpools", name
    )
    return found


def _settled(custom: Custom, namespace: str, name: str) -> dict[str, Any] | None:
    """The pool once its warm containers are all there and ready."""
    body = _pool(custom, namespace, name)
    status = body.get("status") or {}
    wanted = body["spec"]["replicas"]
    ok = status.get("readyReplicas") == wanted and status.get("replicas") == wanted
    return body if ok else None


def _warm_names(host: Host, pool_uid: str) -> set[str]:
    with host.agent.client() as http:
        answer = http.get("/v1/containers", params={"label": f"tux.io/pool-uid={pool_uid}"})
    assert answer.status_code == 200, answer.text
    return {c["name"] for c in answer.json()["items"]}


def _clones(host: Host, pool_uid: str) -> set[str]:
    """The pool's warm containers the agent made, from its log."""
    pattern = re.compile(rf"clone finished: (pool-{pool_uid[:8]}-[0-9a-f]+) ")
    return set(pattern.findall(host.agent.log.read_text(errors="replace")))


def test_a_claim_storm_grows_the_pool_and_idleness_shrinks_it(
    cluster: Cluster, custom: Custom, host: Host, operator: Operator, namespace: str
) -> None:
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SandboxPool",
        "metadata": {"name": "elastic"},
        "spec": {
            "template": "busybox",
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 8,
                "leadSeconds": 10,
                "windowSeconds": 30,
                "scaleDownAfterSeconds": 20,
            },
        },
    }
    cluster.apply(manifest, "-n", namespace)
    # Up to minReplicas on its own (replicas unset: 0).
    body = wait_until(
        lambda: (b := _settled(custom, namespace, "elastic")) and b["spec"]["replicas"] == 1 and b,
        timeout=120,
    )
    assert isinstance(body, dict)
    uid = body["metadata"]["uid"]

    names = [f"storm-{i}" for i in range(6)]
    with ThreadPoolExecutor(6) as workers:
        list(
            workers.map(
                lambda n: cluster.apply(sandbox(n, poolRef={"name": "elastic"}), "-n", namespace),
                names,
            )
        )
    bodies = [wait_phase(custom, namespace, n, "Running", timeout=120) for n in names]
    adopted = {b["status"]["containerName"] for b in bodies if b["status"].get("fromPool")}
    # Grown at once by the misses: one warm container served one claim, five went cold.
    grown = wait_until(
        lambda: _pool(custom, namespace, "elastic")["spec"]["replicas"] > 1, timeout=60
    )
    assert grown
    operator.stop(signal.SIGKILL)  # while the pool fills to its new size
    operator.start()
    full = wait_until(lambda: _settled(custom, namespace, "elastic"), timeout=120)
    assert isinstance(full, dict)
    peak = full["spec"]["replicas"]
    assert 1 < peak <= 8
    assert len(_warm_names(host, uid)) == peak

    # Idle past the cooldown: back to minReplicas, the surplus removed from the host.
    wait_until(
        lambda: (b := _settled(custom, namespace, "elastic")) and b["spec"]["replicas"] == 1,
        timeout=120,
    )
    wait_until(lambda: len(_warm_names(host, uid)) == 1, timeout=60)
    # The scale subresource shows what the autoscaler chose.
    scale = custom.get_namespaced_custom_object_scale(
        GROUP, VERSION, namespace, "sandboxpools", "elastic"
    )
    assert scale["spec"]["replicas"] == 1

    # Made: the one at first, and what the pool grew to after the claims; nothing more,
    # though the operator was killed while it filled.
    made = _clones(host, uid)
    assert adopted <= made
    assert len(made) == len(adopted) + peak, (sorted(made), sorted(adopted), peak)
