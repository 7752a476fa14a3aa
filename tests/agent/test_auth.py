"""Every route but /healthz needs the token; TLS works with a self-signed pair."""

from __future__ import annotations

import ssl
import subprocess

import httpx
import pytest

from tests.support import AGENT, Agent, destroy_everything, make_agent
from tuxio.nodeagent.api import openapi_document


def _routes() -> list[tuple[str, str]]:
    routes = [("GET", "/openapi.json")]
    for path, methods in openapi_document()["paths"].items():
        if path == "/healthz":
            continue
        for method in methods:
            concrete = path.replace("{name}", "some-container").replace("{session}", "abcdefgh")
            routes.append((method.upper(), concrete))
    return routes


ROUTES = _routes()


def test_every_route_is_listed() -> None:
    methods = {(m, p) for m, p in ROUTES}
    assert ("PUT", "/v1/containers/some-container") in methods
    assert ("POST", "/v1/containers/some-container/exec") in methods
    assert ("DELETE", "/v1/containers/some-container") in methods
    assert ("GET", "/v1/containers/some-container/exec") in methods  # the WebSocket's route
    assert ("DELETE", "/v1/containers/some-container/sessions/abcdefgh") in methods
    assert ("PUT", "/v1/containers/some-container/files") in methods
    assert len(ROUTES) == 13


def test_healthz_needs_no_token(agent: Agent) -> None:
    response = httpx.get(f"{agent.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


HEADERS = {
    "none": None,
    "no-credentials": "Bearer",
    "wrong": "Bearer wrong-token",
    "basic": "Basic dXNlcjpwYXNzd29yZA==",
    "lower-case-scheme-wrong": "bearer nope",
}


@pytest.mark.parametrize("header", HEADERS.values(), ids=HEADERS.keys())
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_token_required(agent: Agent, method: str, path: str, header: str | None) -> None:
    headers = {} if header is None else {"Authorization": header}
    body = {"template": "busybox"} if method == "PUT" else {"argv": ["true"]}
    response = httpx.request(
        method,
        f"{agent.url}{path}",
        headers=headers,
        json=body if method in ("PUT", "POST") else None,
    )
    assert response.status_code == 401, response.text
    assert response.json()["reason"] == "Unauthorized"
    assert response.headers["www-authenticate"] == "Bearer"
    assert not (agent.lxcpath / "some-container").exists()


def test_token_prefix_is_not_enough(agent: Agent) -> None:
    response = httpx.get(
        f"{agent.url}/v1/host", headers={"Authorization": f"Bearer {agent.token[:-1]}"}
    )
    assert response.status_code == 401


def test_openapi_served_with_token(http: httpx.Client) -> None:
    document = http.get("/openapi.json").json()
    assert document["info"]["title"] == "tuxio node agent"
    assert "/v1/containers/{name}" in document["paths"]


def test_tls_with_self_signed_pair() -> None:
    tls_agent = make_agent("tls", [])
    cert, key = tls_agent.data_dir / "agent.crt", tls_agent.data_dir / "agent.key"
    subprocess.run(
        [AGENT, "tls", "generate", "--cert", str(cert), "--key", str(key), "--host", "127.0.0.1"],
        check=True,
        capture_output=True,
    )
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    tls_agent.extra = ["--tls-cert", str(cert), "--tls-key", str(key)]
    tls_agent.scheme = "https"
    tls_agent.verify = ssl.create_default_context(cafile=str(cert))
    try:
        tls_agent.start()
        with tls_agent.client() as client:
            assert client.get("/v1/host").status_code == 200
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{tls_agent.url}/healthz", verify=True)  # not a publicly trusted cert
    finally:
        tls_agent.stop()
        destroy_everything(tls_agent)
