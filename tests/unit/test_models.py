"""The API types: names, quantities, limits, labels, exec requests."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tuxio.nodeagent.models import ContainerSpec, ExecRequest, Limits, validate_name


@pytest.mark.parametrize("name", ["a", "web-1", "0abc", "a" * 63, "x-y-z"])
def test_good_names(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "empty"),
        ("a" * 64, "at most 63"),
        ("Web", "DNS-1123"),
        ("-web", "DNS-1123"),
        ("web-", "DNS-1123"),
        ("we_b", "DNS-1123"),
        ("we.b", "DNS-1123"),
        ("../etc", "DNS-1123"),
    ],
)
def test_bad_names(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        validate_name(name)


def test_limits_defaults_and_camel_case() -> None:
    limits = Limits.model_validate({"memory": "512Mi", "memorySwap": "1Gi", "burstCpuSeconds": 20})
    assert limits.memory == 512 * 2**20
    assert limits.memory_swap_bytes == 2**30
    assert limits.burst_cpu_seconds == 20
    assert Limits().memory_swap_bytes == Limits().memory  # no swap unless asked
    dumped = limits.model_dump(by_alias=True)
    assert "memorySwap" in dumped
    assert "burstCpuSeconds" in dumped


BAD_LIMITS: list[tuple[dict[str, Any], str]] = [
    ({"memory": "8Mi"}, "greater than or equal"),
    ({"memory": "256Mi", "memorySwap": "128Mi"}, "at least memory"),
    ({"cpus": 0}, "greater than or equal"),
    ({"cpuQuota": 0}, "greater than"),
    ({"pids": 2}, "greater than or equal"),
    ({"nofile": 1}, "greater than or equal"),
    ({"burstCpuSeconds": -5}, "greater than or equal"),
    ({"swap": "1Gi"}, "Extra inputs"),
]


@pytest.mark.parametrize(("body", "message"), BAD_LIMITS)
def test_bad_limits(body: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Limits.model_validate(body)


@pytest.mark.parametrize(
    ("labels", "ok"),
    [
        ({"tux.io/sandbox-uid": "0b6c7a52-1d4e-4a55-9b0e-2f7f1b9e7c11"}, True),
        ({"app": ""}, True),
        ({"app": "a b"}, False),
        ({"-bad": "x"}, False),
        ({"app": "x" * 64}, False),
        ({f"k{i}": "v" for i in range(65)}, False),
    ],
)
def test_labels(labels: dict[str, str], ok: bool) -> None:
    body = {"template": "busybox", "labels": labels}
    if ok:
        assert ContainerSpec.model_validate(body).labels == labels
    else:
        with pytest.raises(ValidationError):
            ContainerSpec.model_validate(body)


def test_network_defaults_to_none() -> None:
    spec = ContainerSpec.model_validate({"template": "busybox"})
    assert spec.network.mode == "none"
    assert spec.state == "running"
    bridged = ContainerSpec.model_validate(
        {"template": "busybox", "network": {"mode": "bridge", "bridge": "br0"}}
    )
    assert bridged.network.bridge == "br0"
    with pytest.raises(ValidationError, match="bridge"):
        ContainerSpec.model_validate(
            {"template": "busybox", "network": {"mode": "none", "bridge": "br0"}}
        )


@pytest.mark.parametrize(
    "body",
    [
        {"argv": []},
        {"argv": [""]},
        {"argv": ["a\x00b"]},
        {"argv": ["ls"], "env": {"A=B": "c"}},
        {"argv": ["ls"], "env": {"A": "c\x00d"}},  # a 500 once (found by the fuzzer)
        {"argv": ["ls"], "timeoutSeconds": 0},
        {"argv": ["ls"], "maxOutputBytes": 0},
    ],
)
def test_bad_exec_requests(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ExecRequest.model_validate(body)
