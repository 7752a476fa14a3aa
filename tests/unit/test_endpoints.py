"""http:// agent endpoints are refused by the operator and the gateway unless allowed, and
then on the loopback only; the operator says why in the host's Ready condition."""

from __future__ import annotations

import pytest

from tests.unit.fakes import host_record
from tuxio.common.endpoints import endpoint_refusal
from tuxio.operator.agents import AgentRegistry, InsecureEndpoint


@pytest.mark.parametrize(
    ("endpoint", "allowed", "refusal"),
    [
        ("https://10.0.0.7:7443", False, None),
        ("https://agent.example.org", True, None),
        ("http://127.0.0.1:7443", False, "plaintext http:// agents are refused"),
        ("http://127.0.0.1:7443", True, None),
        ("http://127.8.9.10:7443", True, None),
        ("http://[::1]:7443", True, None),
        ("http://localhost:7443", True, None),
        ("http://10.0.0.7:7443", True, "allowed on the loopback only"),
        ("http://agent.example.org:7443", True, "allowed on the loopback only"),
        ("http://127.0.0.1.example.org", True, "allowed on the loopback only"),
        ("ftp://127.0.0.1", True, "not an https:// endpoint"),
    ],
)
def test_endpoint_refusal(endpoint: str, allowed: bool, refusal: str | None) -> None:
    found = endpoint_refusal(endpoint, allowed)
    if refusal is None:
        assert found is None
    else:
        assert found is not None and refusal in found and endpoint in found


async def test_the_operator_never_sends_a_token_to_a_refused_endpoint() -> None:
    reads: list[str] = []

    async def read_secret(namespace: str, name: str) -> dict[str, str]:
        reads.append(name)
        return {"token": "t" * 32}

    registry = AgentRegistry(read_secret, timeout=5)
    with pytest.raises(InsecureEndpoint, match="plaintext http:// agents are refused"):
        await registry.client(host_record("h1", "http://127.0.0.1:7443"))
    loopback = AgentRegistry(read_secret, timeout=5, allow_loopback_plaintext=True)
    with pytest.raises(InsecureEndpoint, match="on the loopback only"):
        await loopback.client(host_record("h2", "http://10.0.0.7:7443"))
    assert reads == []  # the Secret is not even read
    await loopback.client(host_record("h3", "http://127.0.0.1:7443"))
    await loopback.close()
    assert reads == ["agent"]
