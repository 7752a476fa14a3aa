"""The claim webhook as the manifests deploy it: behind a Service, with a certificate for the
Service's names, called by the API server at the Service's endpoint."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import kubernetes
import pytest

from tests.e2e.conftest import (
    SYSTEM_NS,
    Cluster,
    Host,
    Operator,
    operator_in_place_of,
    sandbox,
    wait_phase,
)
from tests.e2e.test_pool import pool, wait_ready_replicas
from tests.support import free_port
from tuxio.operator.admission import CONFIGURATION
from tuxio.operator.labels import ASSIGNMENT

SERVICE = "tuxio-operator-webhook"  # as in manifests/base/operator/service.yaml


def host_address() -> str:
    """This machine's first address that is not loopback: an EndpointSlice may not name one."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        return line.split()[3].split("/")[0]
    raise AssertionError(f"no global IPv4 address on this machine:\n{out}")


@pytest.fixture(scope="module")
def service_operator(cluster: Cluster, operator: Operator, host: Host) -> Iterator[Operator]:
    """The operator with its webhook behind a Service, in place of the session's one."""
    port = free_port()
    address = host_address()
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": SERVICE, "namespace": SYSTEM_NS},
            "spec": {"ports": [{"name": "webhook", "port": 443, "targetPort": port}]},
        }
    )
    cluster.apply(
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{SERVICE}-test",
                "namespace": SYSTEM_NS,
                "labels": {"kubernetes.io/service-name": SERVICE},
            },
            "addressType": "IPv4",
            "ports": [{"name": "webhook", "port": port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        }
    )
    env = {
        "TUXIO_OPERATOR_WEBHOOK_URL": "",
        "TUXIO_OPERATOR_WEBHOOK_SERVICE": SERVICE,
        "TUXIO_OPERATOR_WEBHOOK_SERVICE_NAMESPACE": SYSTEM_NS,
        "TUXIO_OPERATOR_WEBHOOK_LISTEN": address,
        "TUXIO_OPERATOR_WEBHOOK_PORT": str(port),
    }
    try:
        with operator_in_place_of(operator, "operator-webhook.log", env) as running:
            yield running
    finally:
        cluster.kubectl("delete", "endpointslice", f"{SERVICE}-test", "-n", SYSTEM_NS)
        cluster.kubectl("delete", "service", SERVICE, "-n", SYSTEM_NS)


@pytest.fixture
def namespace(cluster: Cluster, service_operator: Operator) -> Iterator[str]:
    """A namespace of this module's own: the session's fixture would start the session's
    operator to clean up, beside this module's one."""
    name = f"webhook-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "sandboxes", "--all", "-n", name, "--timeout=60s", check=False)
    cluster.kubectl("delete", "sandboxpools", "--all", "-n", name, "--timeout=60s", check=False)
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_claim_through_the_service(
    cluster: Cluster,
    custom: kubernetes.client.CustomObjectsApi,
    service_operator: Operator,
    namespace: str,
) -> None:
    config = json.loads(
        cluster.kubectl("get", "mutatingwebhookconfiguration", CONFIGURATION, "-o", "json").stdout
    )
    (hook,) = config["webhooks"]
    assert hook["clientConfig"]["service"] == {
        "name": SERVICE,
        "namespace": SYSTEM_NS,
        "port": 443,
        "path": "/claim",
    }
    assert "url" not in hook["clientConfig"]
    cluster.apply(pool("behind-a-service", 1), "-n", namespace)
    wait_ready_replicas(custom, namespace, "behind-a-service", 1)
    made = custom.create_namespaced_custom_object(
        "tux.io",
        "v1alpha1",
        namespace,
        "sandboxes",
        sandbox("through-the-service", poolRef={"name": "behind-a-service"}),
    )
    # Claimed in the create: the API server called the webhook at the Service's endpoint and
    # verified its certificate for the Service's name.
    decided = json.loads(made["metadata"]["annotations"][ASSIGNMENT])
    body = wait_phase(custom, namespace, "through-the-service", "Running")
    assert body["status"]["containerName"] == decided["containerName"]
    assert body["status"]["fromPool"] == "behind-a-service"
