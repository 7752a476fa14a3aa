"""Node registration: the pure mapping from a Node to its SandboxHost, and when to apply it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from tuxio.operator.host_models import AgentCredentials, HostLocation, SandboxHostSpec
from tuxio.operator.nodes import (
    NodeAgents,
    differs,
    host_for_node,
    node_address,
    node_names,
    wants_host,
)
from tuxio.operator.records import host_record
from tuxio.operator.settings import OperatorSettings

AGENTS = NodeAgents(
    scheme="https",
    port=7443,
    secret_name="tuxio-agent",
    secret_namespace="tuxio-system",
    ca_key="ca.crt",
)


def node(
    name: str = "worker-1",
    labels: dict[str, str] | None = None,
    addresses: list[tuple[str, str]] | None = None,
    unschedulable: bool | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "labels": {"tux.io/lxc-host": "true"} if labels is None else labels,
    }
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    found: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": meta,
        "status": {
            "addresses": [
                {"type": t, "address": a}
                for t, a in (
                    [("Hostname", "worker-1"), ("InternalIP", "10.0.0.7")]
                    if addresses is None
                    else addresses
                )
            ]
        },
    }
    if unschedulable is not None:
        found["spec"] = {"unschedulable": unschedulable}
    return found


def test_labelled_node_maps_to_its_host() -> None:
    assert host_for_node(node(), AGENTS) == {
        "apiVersion": "tux.io/v1alpha1",
        "kind": "SandboxHost",
        "metadata": {
            "name": "worker-1",
            "labels": {"tux.io/managed-by": "tuxio-operator", "tux.io/node": "worker-1"},
        },
        "spec": {
            "endpoint": "https://10.0.0.7:7443",
            "credentialsSecretRef": {
                "name": "tuxio-agent-worker-1",
                "namespace": "tuxio-system",
                "tokenKey": "token",
                "caKey": "ca.crt",
            },
            "unschedulable": False,
        },
    }


@pytest.mark.parametrize(
    ("case", "body"),
    [
        ("no label", node(labels={})),
        ("label false", node(labels={"tux.io/lxc-host": "false"})),
        ("label other value", node(labels={"tux.io/lxc-host": "yes"})),
        ("being deleted", node(deleting=True)),
        ("no addresses yet", node(addresses=[])),
        ("only external", node(addresses=[("ExternalIP", "203.0.113.9")])),
        ("no status at all", {"metadata": {"name": "x", "labels": {"tux.io/lxc-host": "true"}}}),
    ],
)
def test_nodes_without_a_host(case: str, body: dict[str, Any]) -> None:
    assert not wants_host(body), case
    assert host_for_node(body, AGENTS) is None, case


@pytest.mark.parametrize(
    ("addresses", "endpoint"),
    [
        ([("InternalIP", "10.0.0.7")], "https://10.0.0.7:7443"),
        ([("ExternalIP", "203.0.113.9"), ("InternalIP", "10.0.0.7")], "https://10.0.0.7:7443"),
        ([("InternalIP", "10.0.0.7"), ("InternalIP", "fd00::7")], "https://10.0.0.7:7443"),
        ([("InternalIP", "fd00::7")], "https://[fd00::7]:7443"),
    ],
)
def test_endpoint_is_the_first_internal_ip(addresses: list[tuple[str, str]], endpoint: str) -> None:
    host = host_for_node(node(addresses=addresses), AGENTS)
    assert host is not None
    assert host["spec"]["endpoint"] == endpoint
    # The CRD's own pattern accepts it.
    SandboxHostSpec.model_validate(host["spec"])


def test_node_address_none_without_internal_ip() -> None:
    assert node_address(node(addresses=[("Hostname", "worker-1")])) is None


def test_cordoned_node_is_an_unschedulable_host() -> None:
    host = host_for_node(node(unschedulable=True), AGENTS)
    assert host is not None and host["spec"]["unschedulable"] is True


REGION = {"tux.io/lxc-host": "true", "topology.kubernetes.io/region": "eu-west"}


def test_region_label_becomes_the_location() -> None:
    host = host_for_node(node(labels=REGION), AGENTS)
    assert host is not None and host["spec"]["location"] == {"region": "eu-west"}


def test_plain_http_without_ca() -> None:
    agents = NodeAgents("http", 8080, "agents", "ops", None)
    host = host_for_node(node(), agents)
    assert host is not None
    assert host["spec"]["endpoint"] == "http://10.0.0.7:8080"
    assert host["spec"]["credentialsSecretRef"] == {
        "name": "agents-worker-1",
        "namespace": "ops",
        "tokenKey": "token",
    }


def test_agents_from_settings() -> None:
    settings = OperatorSettings(node_agent_port=9443, node_credentials_ca_key="")
    assert NodeAgents.of(settings) == NodeAgents("https", 9443, "tuxio-agent", "tuxio-system", None)


def test_host_spec_is_valid_for_the_crd() -> None:
    """Every field the mapping writes is a field of the API type (which ignores unknown keys,
    as the API server would prune them)."""
    host = host_for_node(node(unschedulable=True, labels=REGION), AGENTS)
    assert host is not None
    SandboxHostSpec.model_validate(host["spec"])

    def aliases(model: type[BaseModel]) -> set[str]:
        return {f.alias or n for n, f in model.model_fields.items()}

    assert set(host["spec"]) <= aliases(SandboxHostSpec)
    assert set(host["spec"]["credentialsSecretRef"]) == aliases(AgentCredentials)
    assert set(host["spec"]["location"]) <= aliases(HostLocation)


def as_record(body: dict[str, Any]) -> Any:
    return host_record(body["metadata"]["name"], body)


def test_differs_not_when_the_host_has_every_field() -> None:
    desired = host_for_node(node(), AGENTS)
    assert desired is not None
    current = {
        **desired,
        "metadata": {**desired["metadata"], "labels": {**desired["metadata"]["labels"], "x": "y"}},
        # Fields someone else owns do not matter.
        "spec": {**desired["spec"], "maxSandboxes": 10},
        "status": {"heartbeat": "2026-01-01T00:00:00Z"},
    }
    assert not differs(desired, as_record(current))


@pytest.mark.parametrize(
    ("case", "change"),
    [
        ("endpoint", lambda h: h["spec"].update(endpoint="https://10.0.0.8:7443")),
        ("unschedulable", lambda h: h["spec"].update(unschedulable=True)),
        ("secret", lambda h: h["spec"]["credentialsSecretRef"].update(name="other")),
        ("ca key", lambda h: h["spec"]["credentialsSecretRef"].pop("caKey")),
        ("region", lambda h: h["spec"].update(location={"region": "elsewhere"})),
        ("label", lambda h: h["metadata"]["labels"].pop("tux.io/managed-by")),
    ],
)
def test_differs_when_a_field_is_off(case: str, change: Any) -> None:
    desired = host_for_node(node(), AGENTS)
    assert desired is not None
    current = host_for_node(node(), AGENTS)
    assert current is not None
    change(current)
    assert differs(desired, as_record(current)), case


def test_differs_when_there_is_no_host() -> None:
    desired = host_for_node(node(), AGENTS)
    assert desired is not None
    assert differs(desired, None)


def test_a_nodes_names_are_its_name_and_every_address() -> None:
    body = node()
    body["status"]["addresses"].append({"type": "Hostname", "address": "worker-1.lan"})
    assert node_names(body) == {"worker-1", "10.0.0.7", "worker-1.lan"}
