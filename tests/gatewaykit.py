"""Test helpers for the gateway: certificates, a fake Kubernetes API at the gateway's `Kube`
interface (it records every request), and a fake agent (a real HTTP and WebSocket server on
loopback, speaking the contract's routes) for the unit tests of the relay and the apps."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import WSMsgType, web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tuxio.gateway.frontproxy import UserInfo
from tuxio.gateway.kube import KubeError, KubeNotFound

# ----- certificates -------------------------------------------------------------------------


@dataclass
class Issued:
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, name: str) -> tuple[Path, Path]:
        cert, key = directory / f"{name}.crt", directory / f"{name}.key"
        cert.write_bytes(self.cert_pem)
        key.write_bytes(self.key_pem)
        return cert, key


class CA:
    """A certificate authority that issues server and client certificates."""

    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.now(UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )

    @property
    def pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def issue(
        self, common_name: str, *, server: bool = False, names: tuple[str, ...] = ()
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )
        if server:
            alt: list[x509.GeneralName] = []
            for name in names or ("localhost", "127.0.0.1"):
                try:
                    alt.append(x509.IPAddress(ipaddress.ip_address(name)))
                except ValueError:
                    alt.append(x509.DNSName(name))
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


def client_context(ca: CA, client: Issued | None, directory: Path) -> ssl.SSLContext:
    """A client's TLS context trusting `ca`, presenting `client` when given."""
    context = ssl.create_default_context(cadata=ca.pem)
    if client is not None:
        cert, key = client.write(directory, f"client-{id(client)}")
        context.load_cert_chain(cert, key)
    return context


# ----- the Kubernetes API, faked at the gateway's Kube interface ----------------------------


def front_proxy_configmap(ca_pem: str, allowed: list[str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
        "data": {
            "requestheader-client-ca-file": ca_pem,
            "requestheader-allowed-names": json.dumps(
                ["front-proxy-client"] if allowed is None else allowed
            ),
            "requestheader-username-headers": '["X-Remote-User"]',
            "requestheader-group-headers": '["X-Remote-Group"]',
            "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
        },
    }


def secret(
    name: str, namespace: str, data: Mapping[str, bytes], version: str = "1"
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": version},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


@dataclass
class FakeKube:
    """Objects by API path; every request recorded as (method, path, query, body)."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    allowed: set[tuple[str, str, str, str]] = field(default_factory=set)  # user, ns, name, sub
    requests: list[tuple[str, str, list[tuple[str, str]], Any]] = field(default_factory=list)
    reviews: list[tuple[UserInfo, dict[str, str]]] = field(default_factory=list)

    async def get(self, path: str, query: Any = ()) -> dict[str, Any]:
        self.requests.append(("GET", path, list(query), None))
        if path in self.objects:
            return json.loads(json.dumps(self.objects[path]))
        raise KubeNotFound(404, {"message": f"{path} not found"}, path)

    async def request(
        self, method: str, path: str, *, query: Any = (), body: Any = None, content_type: str = ""
    ) -> dict[str, Any]:
        self.requests.append((method, path, list(query), body))
        if method == "GET":
            return await self.get(path, query)
        if method == "PATCH":
            current = self.objects.get(path)
            if current is None:
                raise KubeNotFound(404, {"message": "not found"}, path)
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise KubeError(409, {"message": "conflict"}, path)
            data = dict(current.get("data") or {})
            for key, value in (body.get("data") or {}).items():
                if value is None:
                    data.pop(key, None)
                else:
                    data[key] = value
            current["data"] = data
            current["metadata"]["resourceVersion"] = str(
                int(current["metadata"]["resourceVersion"]) + 1
            )
            return current
        raise AssertionError(f"unexpected {method} {path}")

    async def subject_access_review(
        self, user: UserInfo, attributes: Mapping[str, str]
    ) -> tuple[bool, str]:
        self.reviews.append((user, dict(attributes)))
        key = (user.name, attributes["namespace"], attributes["name"], attributes["subresource"])
        return key in self.allowed, "" if key in self.allowed else "no RBAC rule"

    async def watch(self, path: str, query: Any, version: str) -> AsyncIterator[dict[str, Any]]:
        await asyncio.Event().wait()  # never an event: the tests set the stores directly
        yield {}

    async def close(self) -> None:
        pass


# ----- a fake agent: the contract's routes on loopback ------------------------------------


@dataclass
class FakeAgent:
    """The agent's streams and files routes as CONTRACT.md gives them. The exec route answers
    every stdin frame (channel 0) with the same bytes on stdout (channel 1) and ends with a
    Success status on channel 3 when stdin is closed (255, 0); `flood` bytes are sent on
    stdout at once instead, as fast as the socket takes them."""

    token: str = "agent-token"
    flood: int = 0
    refuse: tuple[int, dict[str, str]] | None = None
    seen: list[web.Request] = field(default_factory=list)
    sent: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    closed_with: list[int | None] = field(default_factory=list)
    flooding: web.Request | None = None

    @property
    def writes_paused(self) -> bool:
        """The flood's socket is full: whoever reads it (the gateway) has stopped reading."""
        return self.flooding is not None and self.flooding.protocol.writing_paused

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/containers/{name}/exec", self.exec)
        app.router.add_route("*", "/v1/containers/{name}/files", self.file)
        app.router.add_delete("/v1/containers/{name}/sessions/{session}", self.end_session)
        return app

    async def end_session(self, request: web.Request) -> web.Response:
        """Ends a session named `live...`; any other is unknown (404), as the agent says."""
        self.seen.append(request)
        refused = self._unauthorized(request)
        if refused is not None:
            return refused
        session = request.match_info["session"]
        if not session.startswith("live"):
            return web.json_response(
                {"reason": "SessionNotFound", "message": f"no session {session}"}, status=404
            )
        return web.json_response({"id": session, "exited": True, "exitCode": 129})

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"reason": "Unauthorized", "message": "bad token"}, status=401)
        return None

    async def exec(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        refused = self._unauthorized(request)
        if refused is not None:
            return refused
        if self.refuse is not None:
            return web.json_response(self.refuse[1], status=self.refuse[0])
        ws = web.WebSocketResponse(protocols=("v5.channel.k8s.io", "v4.channel.k8s.io"))
        if request.query.get("tty") == "true":
            ws.headers["X-Tuxio-Session"] = request.query.get("session", "fresh0000")
            ws.headers["X-Tuxio-Session-State"] = "created"
        await ws.prepare(request)
        if self.flood:
            self.flooding = request
            chunk = b"\x01" + b"y" * (64 * 1024 - 1)
            while self.sent < self.flood:
                await ws.send_bytes(chunk)
                self.sent += len(chunk)
            await ws.send_bytes(b'\x03{"status":"Success"}')
            await ws.close()
            return ws
        async for message in ws:
            if message.type != WSMsgType.BINARY:
                continue
            data = message.data
            if data[:1] == b"\x00":
                await ws.send_bytes(b"\x01" + data[1:])
            elif data == b"\xff\x00":
                await ws.send_bytes(b'\x03{"metadata":{},"status":"Success"}')
                await ws.close()
        self.closed_with.append(ws.close_code)
        return ws

    async def file(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        refused = self._unauthorized(request)
        if refused is not None:
            return refused
        path = request.query["path"]
        if request.method == "PUT":
            body = await request.read()
            self.files[path] = body
            return web.json_response({"path": path, "size": len(body), "mode": "0644"})
        if request.method == "DELETE":
            self.files.pop(path, None)
            return web.Response(status=204)
        if path not in self.files:
            return web.json_response({"reason": "NotFound", "message": f"no {path}"}, status=404)
        return web.Response(
            body=self.files[path],
            content_type="application/octet-stream",
            headers={"X-File-Mode": "0644"},
        )


@contextlib.asynccontextmanager
async def serving(
    app: web.Application, ssl_context: ssl.SSLContext | None = None, host: str = "127.0.0.1"
) -> AsyncIterator[str]:
    """`app` on a free loopback port; yields its base URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scheme = "https" if ssl_context else "http"
    try:
        yield f"{scheme}://{host}:{port}"
    finally:
        await runner.cleanup()
