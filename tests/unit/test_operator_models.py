"""The API types, their CRDs, and the pure parts of reconciliation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tuxio.nodeagent.models import ContainerStatus
from tuxio.operator.conditions import set_condition, status_changes
from tuxio.operator.containers import container_spec
from tuxio.operator.crdgen import KINDS, render_all, render_crd, structural
from tuxio.operator.models import SandboxSpec, bytes_of, cores_of
from tuxio.operator.sandbox_status import expires_at, running_status

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_committed_crds_are_current() -> None:
    for name, text in render_all().items():
        assert (CRDS / name).read_text() == text, f"crds/{name} is stale: run 'make crds'"


def _walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path, node)]
    for name, child in node.get("properties", {}).items():
        found += _walk(child, f"{path}.{name}")
    if "items" in node:
        found += _walk(node["items"], f"{path}[]")
    return found


@pytest.mark.parametrize("kind", KINDS, ids=[k.kind for k in KINDS])
def test_schemas_are_structural_and_described(kind: Any) -> None:
    schema = render_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "allOf" not in node and "title" not in node, path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        # Fields are described; items of a list of plain values are described by their list.
        if path.startswith((".spec", ".status")) and not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description"


def test_structural_rejects_real_unions() -> None:
    with pytest.raises(ValueError, match="anyOf"):
        structural({"anyOf": [{"type": "string"}, {"type": "integer"}]})


def test_pool_has_scale_subresource() -> None:
    pool = render_crd(next(k for k in KINDS if k.kind == "SandboxPool"))
    assert (
        pool["spec"]["versions"][0]["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    )
    assert pool["spec"]["names"]["shortNames"] == ["sbxpool"]
    assert yaml.safe_dump(pool)  # renders


@pytest.mark.parametrize(
    ("value", "expected"), [("256Mi", 256 * 2**20), (1024, 1024), ("1G", 10**9)]
)
def test_bytes_of(value: Any, expected: int) -> None:
    assert bytes_of(value) == expected


@pytest.mark.parametrize(("value", "expected"), [("500m", 0.5), (2, 2.0), ("1.5", 1.5)])
def test_cores_of(value: Any, expected: float) -> None:
    assert cores_of(value) == expected


def test_container_spec_maps_resources() -> None:
    spec = SandboxSpec.model_validate(
        {
            "template": "busybox",
            "state": "Stopped",
            "resources": {
                "cpus": 2,
                "burstCPUSeconds": 20,
                "memory": "128Mi",
                "memorySwap": "256Mi",
                "cpuQuota": "500m",
                "pids": 64,
            },
        }
    )
    asked = container_spec(spec, "busybox", "uid-1")
    assert asked.state == "stopped"
    assert asked.limits.cpus == 2
    assert asked.limits.burst_cpu_seconds == 20
    assert asked.limits.memory == 128 * 2**20
    assert asked.limits.memory_swap == 256 * 2**20
    assert asked.limits.cpu_quota == 0.5
    assert asked.labels == {"tux.io/sandbox-uid": "uid-1", "tux.io/managed-by": "tuxio-operator"}
    assert asked.network.mode == "none"


def test_expiry() -> None:
    spec = SandboxSpec.model_validate({"template": "busybox", "lifetime": {"ttlSeconds": 90}})
    assert expires_at("2026-01-01T00:00:00Z", spec) == "2026-01-01T00:01:30Z"
    assert expires_at("2026-01-01T00:00:00Z", SandboxSpec(template="busybox")) is None


def _observed(state: str = "running") -> ContainerStatus:
    return ContainerStatus.model_validate(
        {
            "name": "sbx-1",
            "state": state,
            "pid": 10 if state == "running" else None,
            "template": "busybox",
            "labels": {},
            "specHash": "x",
            "spec": {"template": "busybox"},
            "createdAt": "2026-01-01T00:00:00Z",
            "startedAt": "2026-01-01T00:00:01Z" if state == "running" else None,
            "limits": {
                "cpuset": "1",
                "cpus": 1,
                "cpuQuota": None,
                "memory": 1,
                "memorySwap": 1,
                "pids": 8,
                "nofile": 64,
                "nproc": 8,
            }
            if state == "running"
            else None,
            "burst": None,
            "usage": {"cpuSeconds": 0.1, "memoryBytes": 5, "memoryPeakBytes": 6, "pids": 1}
            if state == "running"
            else None,
        }
    )


AT = "2026-01-01T00:00:05Z"


def test_running_status_then_unchanged() -> None:
    first = running_status({}, _observed(), generation=1, usage_due=True, at=AT)
    assert first["phase"] == "Running"
    assert first["cpuset"] == "1"
    assert first["startedAt"] == "2026-01-01T00:00:01Z"
    assert first["usage"] == {"cpuSeconds": 0.1, "memoryBytes": 5, "pids": 1, "observedAt": AT}
    ready = first["conditions"][0]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "Running")
    current = dict(first)
    again = running_status(current, _observed(), generation=1, usage_due=False, at=AT)
    assert status_changes(current, again) == {}, "an unchanged status is not written again"


def test_running_status_stopped() -> None:
    new = running_status({}, _observed("stopped"), generation=2, usage_due=True, at=AT)
    assert new["phase"] == "Stopped"
    assert new["conditions"][0]["status"] == "False"
    assert "usage" not in new


def test_condition_transition_time_moves_only_on_flip() -> None:
    start = [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Running",
            "message": "",
            "lastTransitionTime": "2020-01-01T00:00:00Z",
        }
    ]
    same = set_condition(
        start, {"type": "Ready", "status": "True", "reason": "Running", "message": ""}, AT
    )
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    flipped = set_condition(
        start, {"type": "Ready", "status": "False", "reason": "Stopped", "message": ""}, AT
    )
    assert flipped[0]["lastTransitionTime"] == AT
    added = set_condition(
        start, {"type": "Scheduled", "status": "True", "reason": "HostChosen", "message": ""}, AT
    )
    assert [c["type"] for c in added] == ["Ready", "Scheduled"]
    assert added[1]["lastTransitionTime"] == AT
