"""The usage ledger end to end: a churn of sandboxes, warm and cold, with the operator killed
(SIGKILL) and restarted in the middle of it, leaves exactly one row per sandbox and one per
lifecycle event, final counters included, in the operator's SQLite ledger."""

from __future__ import annotations

import signal
from typing import Any

import kubernetes

from tests.e2e.conftest import (
    GROUP,
    OPERATOR_ENV,
    VERSION,
    Cluster,
    Host,
    Operator,
    get_sandbox,
    gone,
    sandbox,
    wait_phase,
)
from tests.support import wait_until
from tuxio.ledger.store import Ledger

Custom = kubernetes.client.CustomObjectsApi


def _pool(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SandboxPool",
        "metadata": {"name": name},
        "spec": {"template": "busybox", "replicas": replicas},
    }


def _ready_replicas(custom: Custom, namespace: str, name: str) -> int:
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "sandboxpools", name)
    return int((body.get("status") or {}).get("readyReplicas") or 0)


def test_a_churn_with_operator_kills_is_recorded_exactly_once(
    cluster: Cluster, custom: Custom, host: Host, operator: Operator, namespace: str
) -> None:
    cluster.apply(_pool("churn", 3), "-n", namespace)
    wait_until(lambda: _ready_replicas(custom, namespace, "churn") == 3, timeout=120)
    uids: dict[str, str] = {}
    previous: list[str] = []
    for round_ in range(3):
        names = [f"r{round_}-{i}" for i in range(4)]
        for i, name in enumerate(names):
            spec: dict[str, Any] = (
                {"poolRef": {"name": "churn"}} if i % 2 == 0 else {"template": "busybox"}
            )
            manifest = sandbox(name, **spec)
            manifest["metadata"]["labels"] = {"tux.io/created-by": "ci"}
            cluster.apply(manifest, "-n", namespace)
        for name in previous:
            cluster.kubectl("delete", "sandbox", name, "-n", namespace, "--wait=false")
        # Killed once something of this round has happened: a claim, a placement, a start.
        wait_until(
            lambda names=names: any(
                (get_sandbox(custom, namespace, n).get("status") or {}).get("host") for n in names
            ),
            timeout=60,
            interval=0.01,
        )
        operator.stop(signal.SIGKILL)
        operator.start()
        for name in names:
            uids[name] = wait_phase(custom, namespace, name, "Running", timeout=120)["metadata"][
                "uid"
            ]
        previous = names
    cluster.kubectl("delete", "sandboxes", "--all", "-n", namespace, "--timeout=120s")
    for name in uids:
        assert gone(custom, namespace, name)

    ledger = Ledger.open(OPERATOR_ENV["TUXIO_OPERATOR_LEDGER_URL"], migrate=False)
    try:
        rows = {r["uid"]: r for r in ledger.sandboxes() if r["namespace"] == namespace}
        events = [(uid, name) for uid, name, _ in ledger.events() if uid in rows]
    finally:
        ledger.close()
    assert set(rows) == set(uids.values()), "one row per sandbox, none missing, none extra"
    for name, uid in uids.items():
        row = rows[uid]
        assert (row["name"], row["host"], row["region"]) == (name, host.name, "local")
        assert (row["template"], row["creator"], row["cpus"]) == ("busybox", "ci", 1)
        warm = name.endswith(("-0", "-2"))
        assert row["pool"] == ("churn" if warm else None)
        assert row["launch"] in {"warm", "cold"} if warm else row["launch"] == "cold"
        assert row["cpu_seconds"] is not None and row["cpu_seconds"] > 0, row
        expected = {"created", "ready", "deleted"} | (
            {"claimed"} if row["launch"] == "warm" else set()
        )
        mine = [e for u, e in events if u == uid]
        assert sorted(mine) == sorted(expected), (name, mine)
    assert any(r["launch"] == "warm" for r in rows.values()), "no claim was recorded warm"
