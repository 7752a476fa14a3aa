"""The visitor endpoint on loopback: the token in the subprotocol list or the Authorization
header, the Origin list, every refusal a JSON Status before the upgrade, CORS for files, and
a flood from the agent through real sockets. The agent is a real server speaking the contract's routes."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from tests.gatewaykit import CA, FakeAgent, FakeKube, front_proxy_configmap, secret, serving
from tuxio.gateway.runtime import Gateway
from tuxio.gateway.settings import GatewaySettings
from tuxio.gateway.tokens import KeyRing, mint
from tuxio.gateway.visitor import create_visitor_app

SECRET = "/api/v1/namespaces/tuxio-system/secrets/tuxio-gateway-signing-key"
ORIGIN = "https://play.example.org"


@dataclass
class Env:
    gateway: Gateway
    kube: FakeKube
    agent: FakeAgent
    url: str
    ring: KeyRing

    def token(self, name: str = "visitor-42", uid: str = "uid-42", scopes=("terminal",),
              seconds: int = 600, ring: KeyRing | None = None, now: datetime | None = None) -> str:  # fmt: skip
        token, _ = mint(ring or self.ring, issuer="tuxio-gateway", namespace="team", name=name,
                        uid=uid, scopes=list(scopes), lifetime=timedelta(seconds=seconds),
                        now=now or datetime.now(UTC))  # fmt: skip
        return token


def bearer(token: str) -> str:
    return "base64url.bearer.authorization.k8s.io." + base64.urlsafe_b64encode(
        token.encode()
    ).decode().rstrip("=")


def sandbox(name: str, uid: str) -> dict:
    return {
        "metadata": {"name": name, "namespace": "team", "uid": uid},
        "status": {"phase": "Running", "host": "h1", "containerName": f"sbx-{uid}"},
    }


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    agent = FakeAgent()
    cert, key = CA("c").issue("gw", server=True).write(tmp_path, "serving")
    settings = GatewaySettings(
        tls_cert_file=cert,
        tls_key_file=key,
        allow_plaintext_agents=True,
        visitor_allowed_origins=[ORIGIN],
        signing_key_refresh_seconds=0.0,
    )
    async with serving(agent.app()) as agent_url:
        kube = FakeKube()
        kube.objects["/api/v1/namespaces/tuxio-system/secrets/h1-agent"] = secret(
            "h1-agent", "tuxio-system", {"token": b"agent-token"}
        )
        ring = KeyRing.generate(datetime.now(UTC))
        kube.objects[SECRET] = secret(
            "tuxio-gateway-signing-key", "tuxio-system", ring.to_secret_data()
        )
        gateway = Gateway(settings, kube)  # type: ignore[arg-type]
        gateway.directory.sandboxes.replace(
            [sandbox("visitor-42", "uid-42"), sandbox("visitor-43", "uid-43")]
        )
        gateway.directory.hosts.replace(
            [{"metadata": {"name": "h1"}, "spec": {"endpoint": agent_url, "credentialsSecretRef":
              {"name": "h1-agent", "namespace": "tuxio-system"}}}]
        )  # fmt: skip
        gateway.keys.apply("ADDED", kube.objects[SECRET])
        gateway.front_proxy.replace([front_proxy_configmap(CA("front-proxy").pem)])
        for reflector in gateway.reflectors:
            reflector.synced.set()
        async with serving(create_visitor_app(gateway)) as url:
            yield Env(gateway, kube, agent, url, ring)
        await gateway.agents.close()


TERMINAL = "/v1/namespaces/team/sandboxes/visitor-42/terminal"
V5_OFFER = "v5.channel.k8s.io"


async def _refusal(
    env: Env, path: str, protocols: list[str], headers: dict[str, str]
) -> tuple[int, dict]:
    """The answer to a WebSocket handshake, as a non-browser client reads it."""
    async with aiohttp.ClientSession() as http, http.get(env.url + path, headers={
        "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Protocol": ", ".join(protocols), **headers}) as answer:  # fmt: skip
        return answer.status, await answer.json()


async def test_a_token_in_the_subprotocol_opens_the_terminal(env: Env) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(
            env.url + TERMINAL + "?session=abcdefgh1234",
            protocols=("v5.channel.k8s.io", bearer(env.token())),
            origin=ORIGIN,
        ) as ws,
    ):
        assert ws.protocol == "v5.channel.k8s.io"
        await ws.send_bytes(b"\x00ls\r")
        assert await ws.receive_bytes() == b"\x01ls\r"
    (request,) = env.agent.seen
    assert request.path == "/v1/containers/sbx-uid-42/exec"
    assert request.query["session"] == "abcdefgh1234" and request.query["tty"] == "true"
    # The agent sees the remote-command protocol only, never the visitor's token.
    assert request.headers["Sec-WebSocket-Protocol"] == "v5.channel.k8s.io"
    assert request.headers["Authorization"] == "Bearer agent-token"


@pytest.mark.parametrize(
    ("make", "origin", "status", "message"),
    [
        (
            lambda env: env.token(),
            "https://evil.example.com",
            403,
            "origin 'https://evil.example.com' is not allowed",
        ),
        (lambda env: env.token(), None, 403, "an Origin header is required"),
        (lambda env: None, ORIGIN, 401, "no visitor token"),
        (
            lambda env: env.token(seconds=5, now=datetime.now(UTC) - timedelta(seconds=6)),
            ORIGIN,
            401,
            "expired",
        ),
        (
            lambda env: env.token(ring=KeyRing.generate(datetime.now(UTC))),
            ORIGIN,
            401,
            "a key this gateway does not hold",
        ),
        (lambda env: env.token()[:-6] + "AAAAAA", ORIGIN, 401, "invalid"),
        (
            lambda env: env.token(name="visitor-43", uid="uid-43"),
            ORIGIN,
            403,
            "for sandbox team/visitor-43",
        ),
        (lambda env: env.token(scopes=("files",)), ORIGIN, 403, "does not grant 'terminal'"),
        (
            lambda env: env.token(uid="uid-of-a-namesake-since-deleted"),
            ORIGIN,
            403,
            "earlier sandbox",
        ),
    ],
)
async def test_refusals_are_json_before_the_upgrade(
    env: Env, make, origin, status: int, message: str
) -> None:
    token = make(env)
    protocols = ["v5.channel.k8s.io", *([bearer(token)] if token else [])]
    code, body = await _refusal(env, TERMINAL, protocols, {"Origin": origin} if origin else {})
    assert code == status
    assert body["kind"] == "Status" and message in body["message"]
    assert env.agent.seen == []


async def test_no_origin_is_allowed_only_when_configured(env: Env) -> None:
    env.gateway.settings.visitor_allow_missing_origin = True
    async with aiohttp.ClientSession() as http, http.ws_connect(
        env.url + TERMINAL, headers={"Authorization": f"Bearer {env.token()}"},
        protocols=("v5.channel.k8s.io",),
    ) as ws:  # fmt: skip
        assert ws.protocol == "v5.channel.k8s.io"


async def test_a_token_of_a_key_added_elsewhere_is_read_from_the_secret(env: Env) -> None:
    rotated = env.ring.rotated(datetime.now(UTC))
    env.kube.objects[SECRET] = secret(
        "tuxio-gateway-signing-key", "tuxio-system", rotated.to_secret_data(), "2"
    )
    async with aiohttp.ClientSession() as http, http.ws_connect(
        env.url + TERMINAL, protocols=("v5.channel.k8s.io", bearer(env.token(ring=rotated))), origin=ORIGIN
    ) as ws:  # fmt: skip
        assert ws.protocol == "v5.channel.k8s.io"
    assert env.gateway.keys.ring is not None and env.gateway.keys.ring.current == rotated.current


async def test_files_with_authorization_and_cors(env: Env) -> None:
    url = env.url + "/v1/namespaces/team/sandboxes/visitor-42/files"
    headers = {"Authorization": f"Bearer {env.token(scopes=('files',))}", "Origin": ORIGIN}
    async with aiohttp.ClientSession() as http:
        async with http.options(url, headers={"Origin": ORIGIN,
                                "Access-Control-Request-Method": "PUT"}) as preflight:  # fmt: skip
            assert preflight.status == 204
            assert preflight.headers["Access-Control-Allow-Origin"] == ORIGIN
            assert "PUT" in preflight.headers["Access-Control-Allow-Methods"]
            assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        async with http.put(
            url, params={"path": "/home/x"}, data=b"hello", headers=headers
        ) as answer:
            assert answer.status == 200
            assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN
        async with http.get(url, params={"path": "/home/x"}, headers=headers) as answer:
            assert (answer.status, await answer.read()) == (200, b"hello")
            assert answer.headers["Access-Control-Expose-Headers"] == "X-File-Mode, Content-Length"
        async with http.get(url, params={"path": "/home/x"}, headers={**headers,
                            "Authorization": f"Bearer {env.token()}"}) as answer:  # fmt: skip
            assert answer.status == 403
            assert answer.headers["Access-Control-Allow-Origin"] == ORIGIN  # the page may read why
            assert "does not grant 'files'" in (await answer.json())["message"]
        async with http.post(url, params={"path": "/home/x"}, headers=headers) as answer:
            assert answer.status == 405


async def test_a_terminal_session_is_ended_with_a_terminal_token(env: Env) -> None:
    url = env.url + TERMINAL
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {env.token()}", "Origin": ORIGIN}
        async with http.delete(url, params={"session": "live-0001"}, headers=headers) as answer:
            assert answer.status == 200
            assert (await answer.json())["id"] == "live-0001"
        files_only = {"Authorization": f"Bearer {env.token(scopes=('files',))}", "Origin": ORIGIN}
        async with http.delete(url, params={"session": "live-0001"}, headers=files_only) as no:
            assert no.status == 403
    assert [(r.method, r.path) for r in env.agent.seen] == [
        ("DELETE", "/v1/containers/sbx-uid-42/sessions/live-0001")
    ]


async def test_a_flood_is_held_back_while_the_client_does_not_read(env: Env) -> None:
    """A flood through real sockets: while the client reads nothing, the agent's writes pause
    long before the flood is out, what is in flight stays within the sockets' and libraries'
    buffers, and all of it arrives once the client reads. (That the relay never reads ahead
    is shown exactly by test_gateway_relay.)"""
    flood = 96 * 1024 * 1024
    bound = 40 * 1024 * 1024  # two loopback TCP hops' buffers and the libraries' queues
    env.agent.flood = flood
    async with aiohttp.ClientSession() as http, http.ws_connect(
        env.url + TERMINAL, protocols=("v5.channel.k8s.io", bearer(env.token())), origin=ORIGIN,
        max_msg_size=0,
    ) as ws:  # fmt: skip
        deadline = asyncio.get_running_loop().time() + 120
        while not env.agent.writes_paused and env.agent.sent < flood:
            assert asyncio.get_running_loop().time() < deadline, env.agent.sent
            await asyncio.sleep(0.01)
        assert env.agent.writes_paused and env.agent.sent <= bound, env.agent.sent
        received = 0
        while True:
            message = await ws.receive()
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            received += len(message.data)
            assert env.agent.sent - received <= bound, (env.agent.sent, received)
    assert received >= flood


async def test_a_refused_upgrade_closes_the_connection(env: Env) -> None:
    """A client that asked for an upgrade and got a refusal waits for the server to close
    (websockets' does): the answer says so and the connection ends."""
    host, port = env.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(
        f"GET {TERMINAL} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Protocol: {V5_OFFER}\r\nOrigin: {ORIGIN}\r\n\r\n".encode()
    )
    answer = await asyncio.wait_for(reader.read(), timeout=60)  # to EOF
    writer.close()
    await writer.wait_closed()
    head = answer.split(b"\r\n\r\n")[0].decode()
    assert head.startswith("HTTP/1.1 401")
    assert "Connection: close" in head
