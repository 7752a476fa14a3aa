"""The aggregated API over real TLS on loopback: the front-proxy check in the handshake and in
the request, discovery, the SubjectAccessReviews asked (exactly), streams and files forwarded to
a fake agent with the exact query and credentials, tokens minted. The Kubernetes API is faked at
the gateway's `Kube` interface; the agent is a real server speaking the contract's routes."""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import jwt
import pytest

from tests.gatewaykit import (
    CA,
    FakeAgent,
    FakeKube,
    client_context,
    front_proxy_configmap,
    secret,
    serving,
)
from tuxio.gateway.api import create_api_app
from tuxio.gateway.frontproxy import UserInfo
from tuxio.gateway.runtime import Gateway
from tuxio.gateway.settings import GatewaySettings
from tuxio.gateway.tokens import KeyRing

BASE = "/apis/subresources.tux.io/v1alpha1/namespaces/team/sandboxes"
SVC_NAME = "tuxio-gateway-api.tuxio-system.svc"


@dataclass
class Env:
    gateway: Gateway
    kube: FakeKube
    agent: FakeAgent
    url: str
    front_proxy: ssl.SSLContext  # presents the front proxy's client certificate
    ca: CA
    proxy_ca: CA
    tmp: Path

    def session(self, context: ssl.SSLContext | None = None) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=context or self.front_proxy, force_close=True)
        )


def sandbox(name: str, uid: str, phase: str = "Running") -> dict:
    return {
        "metadata": {"name": name, "namespace": "team", "uid": uid},
        "status": {"phase": phase, "host": "h1", "containerName": f"sbx-{uid}"},
    }


def settings_for(tmp: Path, ca: CA, **extra: object) -> GatewaySettings:
    cert, key = ca.issue("gateway", server=True, names=("127.0.0.1", SVC_NAME)).write(
        tmp, "serving"
    )
    return GatewaySettings(
        tls_cert_file=cert, tls_key_file=key, allow_plaintext_agents=True, **extra
    )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    ca, proxy_ca = CA("cluster"), CA("front-proxy")
    agent = FakeAgent()
    async with serving(agent.app()) as agent_url:
        kube = FakeKube()
        kube.objects["/api/v1/namespaces/tuxio-system/secrets/h1-agent"] = secret(
            "h1-agent", "tuxio-system", {"token": b"agent-token"}
        )
        kube.objects["/apis/tux.io/v1alpha1/namespaces/team/sandboxes/visitor-42"] = sandbox(
            "visitor-42", "uid-42"
        )
        kube.objects["/apis/tux.io/v1alpha1/namespaces/team/sandboxes/stopped"] = sandbox(
            "stopped", "uid-s", phase="Stopped"
        )
        gateway = Gateway(settings_for(tmp_path, ca, token_max_seconds=900), kube)  # type: ignore[arg-type]
        gateway.directory.sandboxes.replace(
            [sandbox("visitor-42", "uid-42"), sandbox("stopped", "uid-s", phase="Stopped")]
        )
        gateway.directory.hosts.replace(
            [
                {
                    "metadata": {"name": "h1"},
                    "spec": {
                        "endpoint": agent_url,
                        "credentialsSecretRef": {"name": "h1-agent", "namespace": "tuxio-system"},
                    },
                }
            ]
        )
        gateway.front_proxy.replace([front_proxy_configmap(proxy_ca.pem)])
        ring = KeyRing.generate(datetime.now(UTC)).to_secret_data()
        gateway.keys.apply("ADDED", secret("tuxio-gateway-signing-key", "tuxio-system", ring))
        for reflector in gateway.reflectors:
            reflector.synced.set()
        async with serving(create_api_app(gateway), gateway.contexts.listening) as url:
            proxy = client_context(ca, proxy_ca.issue("front-proxy-client"), tmp_path)
            yield Env(gateway, kube, agent, url, proxy, ca, proxy_ca, tmp_path)
        await gateway.agents.close()


ALICE = {"X-Remote-User": "alice", "X-Remote-Group": "team-editors"}


async def test_health_needs_no_certificate(env: Env) -> None:
    async with env.session(ssl.create_default_context(cadata=env.ca.pem)) as http:
        for path in ("/healthz", "/livez", "/readyz"):
            async with http.get(env.url + path) as answer:
                assert (answer.status, await answer.text()) == (200, "ok")


async def test_readiness_names_what_is_missing(env: Env) -> None:
    env.gateway.reflectors[0].synced.clear()
    async with env.session() as http, http.get(env.url + "/readyz") as answer:
        assert answer.status == 503
        assert "/apis/tux.io/v1alpha1/sandboxes not listed yet" in await answer.text()


async def test_discovery_for_the_front_proxy(env: Env) -> None:
    async with env.session() as http:
        async with http.get(
            env.url + "/apis", headers={"X-Remote-User": "system:kube-aggregator"}
        ) as a:
            groups = await a.json()
        async with http.get(env.url + "/apis/subresources.tux.io/v1alpha1", headers=ALICE) as a:
            resources = await a.json()
    assert groups["kind"] == "APIGroupList"
    assert groups["groups"][0]["preferredVersion"]["groupVersion"] == "subresources.tux.io/v1alpha1"
    assert resources["kind"] == "APIResourceList"
    assert {r["name"]: r["verbs"] for r in resources["resources"]} == {
        "sandboxes/exec": ["get"],
        "sandboxes/terminal": ["get", "delete"],
        "sandboxes/files": ["get", "update", "delete"],
        "sandboxes/token": ["create"],
    }
    assert all(r["namespaced"] for r in resources["resources"])


async def _status(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[int, dict]:
    async with http.get(url, headers=headers) as answer:
        return answer.status, await answer.json()


async def test_no_client_certificate_no_entry_whatever_the_headers(env: Env) -> None:
    async with env.session(ssl.create_default_context(cadata=env.ca.pem)) as http:
        status, body = await _status(http, env.url + "/apis", {"X-Remote-User": "system:admin",
                                                               "X-Remote-Group": "system:masters"})  # fmt: skip
    assert status == 401
    assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
    assert "only requests proxied by the Kubernetes API server" in body["message"]


async def test_a_certificate_of_another_ca_fails_the_handshake(env: Env) -> None:
    # Signed by the cluster CA (as a user's client certificate would be), named front-proxy-client.
    impostor = client_context(env.ca, env.ca.issue("front-proxy-client"), env.tmp)
    async with env.session(impostor) as http:
        with pytest.raises(aiohttp.ClientError):
            await _status(http, env.url + "/apis", ALICE)


async def test_a_certificate_with_a_name_not_allowed_is_unauthorized(env: Env) -> None:
    other = client_context(env.ca, env.proxy_ca.issue("someone-else"), env.tmp)
    async with env.session(other) as http:
        status, body = await _status(http, env.url + "/apis", ALICE)
    assert (status, body["reason"]) == (401, "Unauthorized")
    assert "'someone-else' is not an allowed front proxy" in body["message"]


async def test_a_proxied_request_without_a_user_is_unauthorized(env: Env) -> None:
    async with env.session() as http:
        status, body = await _status(http, env.url + "/apis", {"X-Remote-Group": "system:masters"})
    assert (status, body["message"]) == (401, "the proxied request names no user")


async def test_a_new_ca_from_the_configmap_is_trusted_from_the_next_connection(env: Env) -> None:
    rotated = CA("front-proxy-2")
    env.gateway.front_proxy.apply("MODIFIED", front_proxy_configmap(rotated.pem))
    new_proxy = client_context(env.ca, rotated.issue("front-proxy-client"), env.tmp)
    async with env.session(new_proxy) as http:
        assert (await _status(http, env.url + "/apis", ALICE))[0] == 200
    async with env.session() as http:  # the old CA's certificate
        with pytest.raises(aiohttp.ClientError):
            await _status(http, env.url + "/apis", ALICE)


async def test_sni_names_the_service_and_the_check_holds(env: Env) -> None:
    async with (
        env.session() as http,
        http.get(env.url + "/apis", headers=ALICE, server_hostname=SVC_NAME) as answer,
    ):
        assert answer.status == 200


def _review(user: str, sub: str, name: str = "visitor-42") -> dict[str, str]:
    return {
        "namespace": "team",
        "verb": "create",
        "group": "subresources.tux.io",
        "version": "v1alpha1",
        "resource": "sandboxes",
        "subresource": sub,
        "name": name,
    }


async def test_exec_without_create_is_forbidden_by_the_gateway(env: Env) -> None:
    async with env.session() as http:
        status, body = await _status(http, env.url + f"{BASE}/visitor-42/exec?command=id", ALICE)
    assert (status, body["reason"]) == (403, "Forbidden")
    assert (
        'cannot create resource "sandboxes/exec" in API group "subresources.tux.io"'
        in body["message"]
    )
    ((user, attributes),) = env.kube.reviews
    assert user == UserInfo("alice", "", ("team-editors",), {})
    assert attributes == _review("alice", "exec")
    assert env.agent.seen == []


async def test_extra_and_groups_reach_the_review(env: Env) -> None:
    headers = {
        "X-Remote-User": "bob",
        "X-Remote-Group": "a",
        "X-Remote-Extra-Scopes": "view",
        "X-Remote-Extra-Acme.com%2Fproject": "p1",
    }
    repeated = [*headers.items(), ("X-Remote-Group", "b"), ("X-Remote-Extra-Scopes", "edit")]
    async with (
        env.session() as http,
        http.get(env.url + f"{BASE}/visitor-42/exec", headers=repeated) as answer,
    ):
        assert answer.status == 403
    ((user, _),) = env.kube.reviews
    assert user == UserInfo(
        "bob", "", ("a", "b"), {"scopes": ("view", "edit"), "acme.com/project": ("p1",)}
    )


async def test_exec_is_relayed_to_the_agent(env: Env) -> None:
    env.kube.allowed.add(("alice", "team", "visitor-42", "exec"))
    query = "command=sh&command=-c&command=echo%20hi&stdin=true&stdout=true&stderr=true&tty=false"
    async with (
        env.session() as http,
        http.ws_connect(
            env.url + f"{BASE}/visitor-42/exec?{query}",
            protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"),
            headers=ALICE,
        ) as ws,
    ):
        assert ws.protocol == "v5.channel.k8s.io"
        await ws.send_bytes(b"\x00hello")
        assert (await ws.receive_bytes()) == b"\x01hello"
        await ws.send_bytes(b"\xff\x00")
        assert json.loads((await ws.receive_bytes())[1:])["status"] == "Success"
        closing = await ws.receive()
        assert closing.type == aiohttp.WSMsgType.CLOSE and closing.data == 1000
    (request,) = env.agent.seen
    assert request.path == "/v1/containers/sbx-uid-42/exec"
    assert request.query.getall("command") == ["sh", "-c", "echo hi"]
    assert [(k, v) for k, v in request.query.items() if k != "command"] == [
        ("stdin", "true"), ("stdout", "true"), ("stderr", "true"), ("tty", "false")
    ]  # fmt: skip
    assert request.headers["Authorization"] == "Bearer agent-token"
    assert request.headers["Sec-WebSocket-Protocol"] == "v5.channel.k8s.io, v4.channel.k8s.io"
    assert "X-Remote-User" not in request.headers


async def test_terminal_is_an_exec_with_a_tty_and_passes_the_session_back(env: Env) -> None:
    env.kube.allowed.add(("alice", "team", "visitor-42", "terminal"))
    async with env.session() as http:
        ws = await http.ws_connect(
            env.url + f"{BASE}/visitor-42/terminal?session=abcdefgh1234&env=FOO%3Dbar",
            protocols=("v4.channel.k8s.io",),
            headers=ALICE,
        )
        assert ws.protocol == "v4.channel.k8s.io"
        assert ws._response.headers["X-Tuxio-Session"] == "abcdefgh1234"
        assert ws._response.headers["X-Tuxio-Session-State"] == "created"
        await ws.close()
    (request,) = env.agent.seen
    assert list(request.query.items()) == [
        ("tty", "true"), ("stdin", "true"), ("stdout", "true"), ("stderr", "false"),
        ("session", "abcdefgh1234"), ("env", "FOO=bar"),
    ]  # fmt: skip
    assert env.kube.reviews[0][1] == _review("alice", "terminal")


@pytest.mark.parametrize(
    ("path", "protocols", "status", "reason", "message"),
    [
        (
            "/visitor-42/exec?command=id&shell=x",
            ("v5.channel.k8s.io",),
            400,
            "BadRequest",
            "unknown query parameter 'shell'",
        ),
        (
            "/visitor-42/exec?command=id",
            ("v3.channel.k8s.io",),
            400,
            "BadRequest",
            "no supported WebSocket subprotocol",
        ),
        (
            "/nothing/exec?command=id",
            ("v5.channel.k8s.io",),
            404,
            "NotFound",
            'sandbox "nothing" not found',
        ),
        (
            "/stopped/exec?command=id",
            ("v5.channel.k8s.io",),
            409,
            "Conflict",
            "is not running (phase Stopped)",
        ),
    ],
)
async def test_refusals_come_before_the_upgrade(
    env: Env, path: str, protocols: tuple[str, ...], status: int, reason: str, message: str
) -> None:
    name = path.split("/")[1]
    env.kube.allowed.add(("alice", "team", name, "exec"))
    async with env.session() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(env.url + BASE + path, protocols=protocols, headers=ALICE)
    assert refused.value.status == status
    async with env.session() as http:
        answer = await _status(http, env.url + BASE + path, {**ALICE, "Upgrade": "websocket",
                               "Connection": "Upgrade", "Sec-WebSocket-Protocol": ",".join(protocols),
                               "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})  # fmt: skip
    assert answer[0] == status
    assert answer[1]["reason"] == reason and message in answer[1]["message"]


async def test_an_agents_refusal_is_passed_on_before_the_upgrade(env: Env) -> None:
    env.kube.allowed.add(("alice", "team", "visitor-42", "exec"))
    env.agent.refuse = (429, {"reason": "TooManySessions", "message": "16 sessions already"})
    async with env.session() as http:
        status, body = await _status(
            http,
            env.url + f"{BASE}/visitor-42/exec?command=id",
            {**ALICE, "Upgrade": "websocket", "Connection": "Upgrade",
             "Sec-WebSocket-Protocol": "v5.channel.k8s.io", "Sec-WebSocket-Version": "13",
             "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="},
        )  # fmt: skip
    assert status == 429
    assert (body["reason"], body["message"]) == ("TooManySessions", "16 sessions already")


async def test_a_rotated_agent_token_is_read_again(env: Env) -> None:
    env.kube.allowed.add(("alice", "team", "visitor-42", "exec"))
    async with env.session() as http:
        ws = await http.ws_connect(env.url + f"{BASE}/visitor-42/exec?command=id",
                                   protocols=("v5.channel.k8s.io",), headers=ALICE)  # fmt: skip
        await ws.close()
        env.agent.token = "rotated"
        env.kube.objects["/api/v1/namespaces/tuxio-system/secrets/h1-agent"] = secret(
            "h1-agent", "tuxio-system", {"token": b"rotated"}
        )
        ws = await http.ws_connect(env.url + f"{BASE}/visitor-42/exec?command=id",
                                   protocols=("v5.channel.k8s.io",), headers=ALICE)  # fmt: skip
        await ws.close()
    assert [r.headers["Authorization"] for r in env.agent.seen] == [
        "Bearer agent-token", "Bearer agent-token", "Bearer rotated"
    ]  # fmt: skip


async def test_the_previous_token_opens_an_agent_that_has_not_rotated_yet(env: Env) -> None:
    """The operator writes a host's new token before its agent has it: after the agent's 401
    the gateway reads the Secret again, finds the same token, and tries the one before."""
    env.kube.allowed.add(("alice", "team", "visitor-42", "exec"))
    env.kube.objects["/api/v1/namespaces/tuxio-system/secrets/h1-agent"] = secret(
        "h1-agent", "tuxio-system", {"token": b"new-token", "previous-token": b"agent-token"}
    )
    async with env.session() as http:
        ws = await http.ws_connect(env.url + f"{BASE}/visitor-42/exec?command=id",
                                   protocols=("v5.channel.k8s.io",), headers=ALICE)  # fmt: skip
        await ws.close()
    assert [r.headers["Authorization"] for r in env.agent.seen] == [
        "Bearer new-token", "Bearer agent-token"
    ]  # fmt: skip


async def test_files_are_proxied(env: Env) -> None:
    env.kube.allowed.add(("alice", "team", "visitor-42", "files"))
    url = env.url + f"{BASE}/visitor-42/files"
    async with env.session() as http:
        async with http.put(url, params={"path": "/tmp/a", "mode": "0600"}, data=b"x" * 300_000,
                            headers=ALICE) as answer:  # fmt: skip
            assert (answer.status, await answer.json()) == (
                200,
                {"path": "/tmp/a", "size": 300_000, "mode": "0644"},
            )
        async with http.get(url, params={"path": "/tmp/a"}, headers=ALICE) as answer:
            assert answer.status == 200
            assert answer.headers["X-File-Mode"] == "0644"
            assert answer.headers["Content-Type"] == "application/octet-stream"
            assert await answer.read() == b"x" * 300_000
        async with http.get(url, params={"path": "/nope"}, headers=ALICE) as answer:
            assert answer.status == 404
            assert (await answer.json())["message"] == "no /nope"
        async with http.delete(url, params={"path": "/tmp/a"}, headers=ALICE) as answer:
            assert answer.status == 204
        async with http.get(url, headers=ALICE) as answer:
            assert answer.status == 400
    assert env.agent.files == {}
    assert [(r.method, dict(r.query)) for r in env.agent.seen] == [
        ("PUT", {"path": "/tmp/a", "mode": "0600"}),
        ("GET", {"path": "/tmp/a"}),
        ("GET", {"path": "/nope"}),
        ("DELETE", {"path": "/tmp/a"}),
    ]
    assert {attributes["subresource"] for _, attributes in env.kube.reviews} == {"files"}


async def test_a_terminal_session_is_ended_on_its_agent(env: Env) -> None:
    env.kube.allowed.add(("alice", "team", "visitor-42", "terminal"))
    url = env.url + f"{BASE}/visitor-42/terminal"
    async with env.session() as http:
        async with http.delete(url, params={"session": "live-0001"}, headers=ALICE) as answer:
            assert (answer.status, await answer.json()) == (
                200,
                {"id": "live-0001", "exited": True, "exitCode": 129},
            )
        async with http.delete(url, params={"session": "gone-0001"}, headers=ALICE) as answer:
            assert answer.status == 404
            assert (await answer.json())["message"] == "no session gone-0001"
        for bad in ({}, {"session": "short"}, {"session": "live-0001", "other": "x"}):
            async with http.delete(url, params=bad, headers=ALICE) as answer:
                assert answer.status == 400, bad
    assert [(r.method, r.path) for r in env.agent.seen] == [
        ("DELETE", "/v1/containers/sbx-uid-42/sessions/live-0001"),
        ("DELETE", "/v1/containers/sbx-uid-42/sessions/gone-0001"),
    ]
    assert {attributes["subresource"] for _, attributes in env.kube.reviews} == {"terminal"}


async def test_ending_a_session_takes_create_on_the_terminal(env: Env) -> None:
    url = env.url + f"{BASE}/visitor-42/terminal"
    async with (
        env.session() as http,
        http.delete(url, params={"session": "live-0001"}, headers=ALICE) as answer,
    ):
        assert answer.status == 403
    assert env.agent.seen == []


async def test_token_minting_asks_for_each_scope(env: Env) -> None:
    for sub in ("token", "terminal"):
        env.kube.allowed.add(("alice", "team", "visitor-42", sub))
    body = {"apiVersion": "subresources.tux.io/v1alpha1", "kind": "SandboxToken",
            "spec": {"scopes": ["terminal"], "expirationSeconds": 120}}  # fmt: skip
    async with env.session() as http:
        async with http.post(
            env.url + f"{BASE}/visitor-42/token", json=body, headers=ALICE
        ) as answer:
            assert answer.status == 201
            made = await answer.json()
        body["spec"]["scopes"] = ["terminal", "exec"]
        async with http.post(
            env.url + f"{BASE}/visitor-42/token", json=body, headers=ALICE
        ) as answer:
            assert answer.status == 403
            assert 'cannot create resource "sandboxes/exec"' in (await answer.json())["message"]
    assert made["kind"] == "SandboxToken"
    assert made["metadata"] == {"name": "visitor-42", "namespace": "team", "uid": "uid-42"}
    assert made["spec"] == {"scopes": ["terminal"], "expirationSeconds": 120}
    claims = jwt.decode(made["status"]["token"], options={"verify_signature": False})
    assert (claims["sub"], claims["ns"], claims["scopes"]) == ("uid-42", "team", ["terminal"])
    assert made["status"]["expirationTimestamp"].endswith("Z")
    assert [a["subresource"] for _, a in env.kube.reviews] == ["token", "terminal", "token", "exec"]
    # The UID is read from the API server, not the watch, when minting.
    assert (
        "GET",
        "/apis/tux.io/v1alpha1/namespaces/team/sandboxes/visitor-42",
        [],
        None,
    ) in env.kube.requests


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"scopes": ["root"]}, "spec.scopes.0"),
        ({"scopes": []}, "spec.scopes"),
        ({"expirationSeconds": 901}, "more than the gateway's maximum, 900"),
        ({"expirationSeconds": 0}, "spec.expirationSeconds"),
        ({"audience": "x"}, "spec.audience"),
    ],
)
async def test_bad_token_requests_are_invalid(env: Env, spec: dict, message: str) -> None:
    for sub in ("token", "terminal"):
        env.kube.allowed.add(("alice", "team", "visitor-42", sub))
    url = env.url + f"{BASE}/visitor-42/token"
    async with (
        env.session() as http,
        http.post(url, json={"spec": spec}, headers=ALICE) as answer,
    ):
        assert answer.status == 422
        body = await answer.json()
    assert body["reason"] == "Invalid" and message in body["message"]


async def test_a_sandbox_the_watch_saw_pending_is_read_again(env: Env) -> None:
    env.kube.allowed.add(("alice", "team", "starting", "exec"))
    env.gateway.directory.sandboxes.apply("ADDED", sandbox("starting", "uid-st", phase="Creating"))
    env.kube.objects["/apis/tux.io/v1alpha1/namespaces/team/sandboxes/starting"] = sandbox(
        "starting", "uid-st"
    )
    async with env.session() as http:
        ws = await http.ws_connect(env.url + f"{BASE}/starting/exec?command=id",
                                   protocols=("v5.channel.k8s.io",), headers=ALICE)  # fmt: skip
        await ws.close()
    assert env.agent.seen[0].path == "/v1/containers/sbx-uid-st/exec"


async def test_unknown_paths_are_statuses(env: Env) -> None:
    async with env.session() as http:
        status, body = await _status(http, env.url + f"{BASE}/visitor-42/attach", ALICE)
    assert (status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
