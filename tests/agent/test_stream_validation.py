"""Every refusal of an exec happens before the upgrade: an HTTP 4xx with a JSON reason."""

from __future__ import annotations

import httpx
import pytest

from tests import remote
from tests.agent.conftest import Container
from tests.support import Agent
from tuxio.common import remotecommand as rc

SHELL = [("command", "sh")]

REFUSALS = [
    ("no subprotocol", SHELL, (), None, 400, "NoAcceptableSubprotocol"),
    ("only v1", SHELL, ("channel.k8s.io",), None, 400, "NoAcceptableSubprotocol"),
    ("base64 only", SHELL, ("v4.base64.channel.k8s.io",), None, 400, "NoAcceptableSubprotocol"),
    ("no command", [], rc.SUBPROTOCOLS, None, 400, "InvalidExecRequest"),
    ("bad flag", [*SHELL, ("stdin", "maybe")], rc.SUBPROTOCOLS, None, 400, "InvalidExecRequest"),
    (
        "unknown parameter",
        [*SHELL, ("shell", "x")],
        rc.SUBPROTOCOLS,
        None,
        400,
        "InvalidExecRequest",
    ),
    (
        "session without tty",
        [*SHELL, ("session", "a" * 16)],
        rc.SUBPROTOCOLS,
        None,
        400,
        "InvalidExecRequest",
    ),
    (
        "bad session id",
        [("tty", "true"), ("session", "../../etc")],
        rc.SUBPROTOCOLS,
        None,
        400,
        "InvalidExecRequest",
    ),
    (
        "no streams",
        [*SHELL, ("stdout", "false"), ("stderr", "false")],
        rc.SUBPROTOCOLS,
        None,
        400,
        "InvalidExecRequest",
    ),
    ("bad env", [*SHELL, ("env", "=x")], rc.SUBPROTOCOLS, None, 400, "InvalidExecRequest"),
    ("no token", SHELL, rc.SUBPROTOCOLS, "", 401, "Unauthorized"),
    ("wrong token", SHELL, rc.SUBPROTOCOLS, "not-the-token", 401, "Unauthorized"),
]


@pytest.mark.parametrize(
    ("params", "protocols", "token", "status", "reason"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
async def test_refused_before_the_upgrade(
    agent: Agent,
    container: Container,
    streams: remote.Streams,
    params: list[tuple[str, str]],
    protocols: tuple[str, ...],
    token: str | None,
    status: int,
    reason: str,
) -> None:
    answer = await streams.try_open(agent, container.name, params, protocols=protocols, token=token)
    assert isinstance(answer, remote.Denied), "upgraded"
    assert answer.status == status
    assert answer.body["reason"] == reason
    assert answer.body["message"]


async def test_unknown_container_is_404(agent: Agent, streams: remote.Streams) -> None:
    answer = await streams.try_open(agent, "no-such-container", remote.terminal())
    assert isinstance(answer, remote.Denied)
    assert (answer.status, answer.body["reason"]) == (404, "ContainerNotFound")


async def test_bad_container_name_is_422(agent: Agent, streams: remote.Streams) -> None:
    answer = await streams.try_open(agent, "Not_A_Name", remote.terminal())
    assert isinstance(answer, remote.Denied)
    assert (answer.status, answer.body["reason"]) == (422, "InvalidRequest")


async def test_stopped_container_is_409(
    agent: Agent, api: httpx.AsyncClient, name: str, streams: remote.Streams
) -> None:
    response = await api.put(
        f"/v1/containers/{name}", json={"template": "busybox", "state": "stopped"}
    )
    assert response.status_code == 200
    answer = await streams.try_open(agent, name, remote.terminal())
    assert isinstance(answer, remote.Denied)
    assert (answer.status, answer.body["reason"]) == (409, "ContainerNotRunning")


async def test_plain_get_needs_an_upgrade(api: httpx.AsyncClient, container: Container) -> None:
    response = await api.get(f"/v1/containers/{container.name}/exec", params={"command": "ls"})
    assert response.status_code == 400
    assert response.json()["reason"] == "UpgradeRequired"


async def test_sessions_of_an_unknown_container(api: httpx.AsyncClient) -> None:
    response = await api.get("/v1/containers/no-such-container/sessions")
    assert (response.status_code, response.json()["reason"]) == (404, "ContainerNotFound")
    response = await api.delete("/v1/containers/no-such-container/sessions/abcdefgh")
    assert (response.status_code, response.json()["reason"]) == (404, "SessionNotFound")
    response = await api.delete("/v1/containers/no-such-container/sessions/bad!")
    assert (response.status_code, response.json()["reason"]) == (422, "InvalidRequest")
