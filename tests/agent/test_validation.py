"""Bad input gets a 4xx with a JSON reason, and changes nothing on the host."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.support import Agent

BAD_NAMES = [
    ("UPPER", "upper case"),
    ("-leading-dash", "leading dash"),
    ("trailing-dash-", "trailing dash"),
    ("under_score", "underscore"),
    ("a" * 64, "64 characters"),
    ("dot.ted", "dot"),
]


@pytest.mark.parametrize(("bad", "why"), BAD_NAMES, ids=[w for _, w in BAD_NAMES])
def test_bad_names_rejected(http: httpx.Client, agent: Agent, bad: str, why: str) -> None:
    response = http.put(f"/v1/containers/{bad}", json={"template": "busybox"})
    assert response.status_code == 422, why
    body = response.json()
    assert body["reason"] == "InvalidRequest"
    assert "name" in body["message"]
    assert not (agent.lxcpath / bad).exists()


def test_63_characters_is_fine(http: httpx.Client, agent: Agent) -> None:
    name = "n" * 63
    try:
        response = http.put(
            f"/v1/containers/{name}", json={"template": "busybox", "state": "stopped"}
        )
        assert response.status_code == 200, response.text
    finally:
        http.delete(f"/v1/containers/{name}")


BAD_SPECS: list[tuple[str, Any, int, str, str]] = [
    ("unknown template", {"template": "nosuch"}, 422, "UnknownTemplate", "nosuch"),
    ("template not a name", {"template": "../etc"}, 422, "InvalidRequest", "template"),
    ("no template", {}, 422, "InvalidRequest", "template"),
    (
        "more cpus than shared",
        {"template": "busybox", "limits": {"cpus": 64}},
        422,
        "InvalidSpec",
        "shares only",
    ),
    ("zero cpus", {"template": "busybox", "limits": {"cpus": 0}}, 422, "InvalidRequest", "cpus"),
    (
        "memory below floor",
        {"template": "busybox", "limits": {"memory": "1Mi"}},
        422,
        "InvalidRequest",
        "memory",
    ),
    (
        "memory not a quantity",
        {"template": "busybox", "limits": {"memory": "lots"}},
        422,
        "InvalidRequest",
        "quantity",
    ),
    (
        "swap below memory",
        {"template": "busybox", "limits": {"memory": "256Mi", "memorySwap": "128Mi"}},
        422,
        "InvalidRequest",
        "memorySwap",
    ),
    ("pids too few", {"template": "busybox", "limits": {"pids": 1}}, 422, "InvalidRequest", "pids"),
    (
        "negative burst",
        {"template": "busybox", "limits": {"burstCpuSeconds": -1}},
        422,
        "InvalidRequest",
        "burst",
    ),
    (
        "unknown field",
        {"template": "busybox", "privileged": True},
        422,
        "InvalidRequest",
        "privileged",
    ),
    ("bad state", {"template": "busybox", "state": "paused"}, 422, "InvalidRequest", "state"),
    (
        "bad label value",
        {"template": "busybox", "labels": {"k": "has space"}},
        422,
        "InvalidRequest",
        "label",
    ),
    (
        "bridge without name",
        {"template": "busybox", "network": {"mode": "bridge"}},
        422,
        "InvalidRequest",
        "bridge",
    ),
    ("spec is a list", [1, 2], 422, "InvalidRequest", "valid dictionary"),
]


@pytest.mark.parametrize(
    ("why", "body", "status", "reason", "mentions"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS]
)
def test_bad_specs_rejected(
    http: httpx.Client,
    agent: Agent,
    name: str,
    why: str,
    body: Any,
    status: int,
    reason: str,
    mentions: str,
) -> None:
    response = http.put(f"/v1/containers/{name}", json=body)
    assert response.status_code == status, response.text
    answer = response.json()
    assert answer["reason"] == reason
    assert mentions.lower() in answer["message"].lower() or mentions in str(answer.get("details"))
    assert not (agent.lxcpath / name).exists(), "a rejected spec must leave nothing behind"


def test_malformed_json(http: httpx.Client, name: str) -> None:
    response = http.put(
        f"/v1/containers/{name}",
        content=b'{"template": "busy',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["reason"] == "MalformedJSON"


def test_form_body_is_refused_clearly(http: httpx.Client, name: str) -> None:
    response = http.put(
        f"/v1/containers/{name}",
        content=b"template=busybox",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415
    assert "application/json" in response.json()["message"]


def test_missing_container(http: httpx.Client) -> None:
    response = http.get("/v1/containers/does-not-exist")
    assert response.status_code == 404
    assert response.json()["reason"] == "ContainerNotFound"


def test_bad_label_selector(http: httpx.Client) -> None:
    response = http.get("/v1/containers", params={"label": "no-equals-sign"})
    assert response.status_code == 422
    assert "key=value" in response.json()["message"]


def test_exec_needs_argv(http: httpx.Client, name: str) -> None:
    response = http.post(f"/v1/containers/{name}/exec", json={"argv": []})
    assert response.status_code == 422
