"""The API server rejects bad specs with readable messages (schema and CEL rules)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.e2e.conftest import GROUP, VERSION, Cluster

BAD_SANDBOXES: list[tuple[str, dict[str, Any] | None, str]] = [
    ("no spec", None, "spec: Required value"),
    ("neither template nor poolRef", {}, "set exactly one of template and poolRef"),
    (
        "template and poolRef",
        {"template": "busybox", "poolRef": {"name": "warm"}},
        "set exactly one of template and poolRef",
    ),
    ("template not a DNS label", {"template": "Busy_Box"}, "spec.template: Invalid value"),
    ("poolRef without a name", {"poolRef": {}}, "spec.poolRef.name: Required value"),
    (
        "zero cpus",
        {"template": "busybox", "resources": {"cpus": 0}},
        "spec.resources.cpus: Invalid value: 0: spec.resources.cpus in body should be greater than or equal to 1",
    ),
    (
        "too many cpus",
        {"template": "busybox", "resources": {"cpus": 1000}},
        "should be less than or equal to 256",
    ),
    (
        "memory not a quantity",
        {"template": "busybox", "resources": {"memory": "lots"}},
        "spec.resources.memory: Invalid value",
    ),
    (
        "memory below 16Mi",
        {"template": "busybox", "resources": {"memory": "8Mi"}},
        "memory must be at least 16Mi",
    ),
    (
        "swap below memory",
        {"template": "busybox", "resources": {"memory": "512Mi", "memorySwap": "256Mi"}},
        "memorySwap (memory plus swap) must be at least memory",
    ),
    (
        "too few pids",
        {"template": "busybox", "resources": {"pids": 2}},
        "spec.resources.pids: Invalid value: 2",
    ),
    (
        "negative burst",
        {"template": "busybox", "resources": {"burstCPUSeconds": -1}},
        "spec.resources.burstCPUSeconds: Invalid value: -1",
    ),
    (
        "cpuQuota too small",
        {"template": "busybox", "resources": {"cpuQuota": "5m"}},
        "cpuQuota must be at least 10m and at most cpus",
    ),
    (
        "cpuQuota above cpus",
        {"template": "busybox", "resources": {"cpus": 1, "cpuQuota": "1500m"}},
        "cpuQuota must be at least 10m and at most cpus",
    ),
    (
        "disk below 32Mi",
        {"template": "busybox", "resources": {"disk": "16Mi"}},
        "disk must be at least 32Mi",
    ),
    (
        "disk above 16Ti",
        {"template": "busybox", "resources": {"disk": "20Ti"}},
        "disk must be at most 16Ti",
    ),
    (
        "disk not a quantity",
        {"template": "busybox", "resources": {"disk": "plenty"}},
        "spec.resources.disk: Invalid value",
    ),
    (
        "too few inodes",
        {"template": "busybox", "resources": {"inodes": 100}},
        "spec.resources.inodes: Invalid value: 100",
    ),
    (
        "ttl of zero",
        {"template": "busybox", "lifetime": {"ttlSeconds": 0}},
        "spec.lifetime.ttlSeconds: Invalid value: 0",
    ),
    (
        "unknown state",
        {"template": "busybox", "state": "Paused"},
        'spec.state: Unsupported value: "Paused"',
    ),
    (
        "unknown restart policy",
        {"template": "busybox", "restartPolicy": "Sometimes"},
        'spec.restartPolicy: Unsupported value: "Sometimes"',
    ),
    (
        "bridge without a name",
        {"template": "busybox", "network": {"mode": "bridge"}},
        "network mode bridge needs the name of a host bridge",
    ),
    (
        "unknown network mode",
        {"template": "busybox", "network": {"mode": "host"}},
        'spec.network.mode: Unsupported value: "host"',
    ),
    (
        "unknown field",
        {"template": "busybox", "privileged": True},
        'unknown field "spec.privileged"',
    ),
    (
        "clientIP not an address",
        {"template": "busybox", "placement": {"clientIP": "example.org"}},
        'spec.placement.clientIP: Invalid value: "example.org": clientIP must be an IPv4 or IPv6 address',
    ),
]


def _create(
    cluster: Cluster, kind: str, spec: dict[str, Any] | None, namespaced: bool = True
) -> tuple[int, str]:
    manifest: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {
            "name": f"bad-{uuid.uuid4().hex[:6]}",
            **({"namespace": "default"} if namespaced else {}),
        },
    }
    if spec is not None:
        manifest["spec"] = spec
    result = cluster.kubectl(
        "create", "--dry-run=server", "-f", "-", stdin=json.dumps(manifest), check=False
    )
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    ("why", "spec", "message"), BAD_SANDBOXES, ids=[c[0] for c in BAD_SANDBOXES]
)
def test_bad_sandbox_rejected(
    cluster: Cluster, why: str, spec: dict[str, Any] | None, message: str
) -> None:
    code, stderr = _create(cluster, "Sandbox", spec)
    assert code != 0, f"{why}: accepted"
    assert message in stderr, stderr


def test_good_sandbox_accepted_with_defaults(cluster: Cluster) -> None:
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Sandbox",
        "metadata": {"name": "good", "namespace": "default"},
        "spec": {"template": "busybox", "resources": {"memory": 268435456, "cpuQuota": "500m"}},
    }
    result = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(manifest)
    )
    spec = json.loads(result.stdout)["spec"]
    assert spec["resources"]["pids"] == 256
    assert spec["resources"]["cpus"] == 1
    assert spec["state"] == "Running"
    assert spec["restartPolicy"] == "Always"
    assert spec["network"] == {"mode": "none"}


def test_immutable_fields(cluster: Cluster) -> None:
    name = f"immutable-{uuid.uuid4().hex[:6]}"
    base = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Sandbox",
        "metadata": {"name": name, "namespace": "default"},
    }
    # Stopped with an unknown template and no operator in the picture: it only has to be stored.
    cluster.kubectl(
        "create",
        "-f",
        "-",
        stdin=json.dumps({**base, "spec": {"template": "nonesuch", "state": "Stopped"}}),
    )
    try:
        changed = cluster.kubectl(
            "apply",
            "-f",
            "-",
            check=False,
            stdin=json.dumps({**base, "spec": {"template": "other", "state": "Stopped"}}),
        )
        assert changed.returncode != 0
        assert "template is immutable" in changed.stderr
    finally:
        cluster.kubectl("delete", "sandbox", name, "-n", "default", "--wait=false")
        cluster.kubectl(
            "patch",
            "sandbox",
            name,
            "-n",
            "default",
            "--type=merge",
            "-p",
            '{"metadata":{"finalizers":null}}',
            check=False,
        )


BAD_OTHERS: list[tuple[str, str, dict[str, Any], bool, str]] = [
    (
        "pool with negative replicas",
        "SandboxPool",
        {"template": "busybox", "replicas": -1},
        True,
        "spec.replicas: Invalid value: -1",
    ),
    (
        "pool without template",
        "SandboxPool",
        {"replicas": 3},
        True,
        "spec.template: Required value",
    ),
    (
        "host endpoint not a URL",
        "SandboxHost",
        {"endpoint": "host1:7443", "credentialsSecretRef": {"name": "s", "namespace": "n"}},
        False,
        "spec.endpoint: Invalid value",
    ),
    (
        "host latitude off the globe",
        "SandboxHost",
        {
            "endpoint": "https://h:7443",
            "credentialsSecretRef": {"name": "s", "namespace": "n"},
            "location": {"latitude": 100},
        },
        False,
        "spec.location.latitude: Invalid value: 100",
    ),
    (
        "host latitude without longitude",
        "SandboxHost",
        {
            "endpoint": "https://h:7443",
            "credentialsSecretRef": {"name": "s", "namespace": "n"},
            "location": {"latitude": 52.37},
        },
        False,
        "set both latitude and longitude, or neither",
    ),
    (
        "pool spread unknown",
        "SandboxPool",
        {"template": "busybox", "placement": {"spread": "Everywhere"}},
        True,
        'spec.placement.spread: Unsupported value: "Everywhere"',
    ),
    (
        "pool region listed twice",
        "SandboxPool",
        {"template": "busybox", "placement": {"regions": ["eu-west", "eu-west"]}},
        True,
        "spec.placement.regions[1]: Duplicate value",
    ),
    (
        "pool autoscaling min above max",
        "SandboxPool",
        {"template": "busybox", "autoscaling": {"minReplicas": 5, "maxReplicas": 2}},
        True,
        "minReplicas must not exceed maxReplicas",
    ),
    (
        "pool autoscaling window shorter than its lead",
        "SandboxPool",
        {
            "template": "busybox",
            "autoscaling": {"maxReplicas": 2, "leadSeconds": 120, "windowSeconds": 60},
        },
        True,
        "windowSeconds (where the claim rate is measured) must be at least leadSeconds",
    ),
    (
        "pool autoscaling without max",
        "SandboxPool",
        {"template": "busybox", "autoscaling": {"minReplicas": 1}},
        True,
        "spec.autoscaling.maxReplicas: Required value",
    ),
    (
        "host without credentials",
        "SandboxHost",
        {"endpoint": "https://h:7443"},
        False,
        "spec.credentialsSecretRef: Required value",
    ),
]


@pytest.mark.parametrize(
    ("why", "kind", "spec", "namespaced", "message"), BAD_OTHERS, ids=[c[0] for c in BAD_OTHERS]
)
def test_bad_pools_and_hosts_rejected(
    cluster: Cluster, why: str, kind: str, spec: dict[str, Any], namespaced: bool, message: str
) -> None:
    code, stderr = _create(cluster, kind, spec, namespaced)
    assert code != 0, f"{why}: accepted"
    assert message in stderr, stderr


def test_explain_describes_fields(cluster: Cluster) -> None:
    explained = cluster.kubectl("explain", "sandbox.spec.resources").stdout
    assert "Limits enforced on the container" in explained
    assert "burstCPUSeconds" in explained
    assert "CPU seconds the sandbox may use on all shared cores" in explained
    host = cluster.kubectl("explain", "sandboxhost.spec.location").stdout
    assert "region" in host


def test_short_names_and_category(cluster: Cluster) -> None:
    assert cluster.kubectl("get", "sbx", "-A").returncode == 0
    assert cluster.kubectl("get", "sbxpool", "-A").returncode == 0
    assert cluster.kubectl("get", "sbxhost").returncode == 0
    assert cluster.kubectl("get", "tuxio", "-A").returncode == 0
