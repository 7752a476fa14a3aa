"""Schemathesis against the real agent (tests/fuzzing.py), a few cases per operation: no 5xx,
every answer as the OpenAPI document it serves says, 401 without the token on every route but
/healthz, refused WebSocket upgrades answered with a JSON 4xx. `make fuzz` runs the same with
at least 1000 cases per operation (bench/fuzz.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.agent.conftest import run_container
from tests.fuzzing import SHORT_CASES, agent_target, fuzz_agent, summary, write_report
from tests.support import Agent


@pytest.fixture(scope="module")
def keeper(agent: Agent) -> Iterator[str]:
    """A running container the cases aim at (exec, files, sessions), deleted afterwards."""
    name = "fuzz-keeper"
    run_container(agent, name)
    yield name
    with agent.client() as client:
        client.delete(f"/v1/containers/{name}")


def _names(agent: Agent) -> set[str]:
    with agent.client() as client:
        listed = client.get("/v1/containers")
    assert listed.status_code == 200, listed.text
    return {item["name"] for item in listed.json()["items"]}


def test_the_served_document_is_the_committed_one(agent: Agent) -> None:
    import json

    from tests.unit.test_openapi import COMMITTED

    with agent.client() as client:
        served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == json.loads(COMMITTED.read_text())


@pytest.mark.parametrize("authenticated", [True, False], ids=["with-token", "without-token"])
def test_fuzz(agent: Agent, keeper: str, authenticated: bool) -> None:
    with agent.client() as client:
        document = client.get("/openapi.json").json()
    before = _names(agent)
    reports = fuzz_agent(
        agent_target(agent.url, agent.token), document, keeper, cases=SHORT_CASES,
        authenticated=authenticated,
    )  # fmt: skip
    write_report(f"agent {'with' if authenticated else 'without'} its token", reports)
    operations = {f"{m.upper()} {p}" for p, ops in document["paths"].items() for m in ops}
    assert {r.operation for r in reports} == operations
    assert all(r.cases > 0 for r in reports), [r.as_json() for r in reports]
    assert summary(reports) == ""
    # Every container a fuzzed create made was deleted as its answer came; a refused create
    # made none.
    assert _names(agent) == before


@pytest.mark.parametrize(
    ("method", "path", "status", "reason"),
    [
        ("GET", "/v1/no-such-route", 404, "NotFound"),
        ("POST", "/v1/containers/fuzz-keeper/files?path=/tmp", 405, "MethodNotAllowed"),
        ("GET", "/no-such-route", 404, "NotFound"),
    ],
)
def test_routing_refusals_are_the_agents_json(
    agent: Agent, method: str, path: str, status: int, reason: str
) -> None:
    with agent.client() as client:
        answer = client.request(method, path)
    assert (answer.status_code, answer.json()["reason"]) == (status, reason)
    assert answer.json()["message"]
    if status == 405:
        assert answer.headers["allow"]
    with agent.client(token="not-the-token") as client:
        assert client.request(method, path).status_code == 401
