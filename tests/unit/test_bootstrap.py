"""The agent's credentials bootstrap against a small API server over HTTP: a request stored
by a POST that answered 500 (an etcd timeout) is not made twice, and a refusal is not retried."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tuxio.common.sealing import SEALED_TOKEN_ANNOTATION, seal
from tuxio.nodeagent import bootstrap as bootstrap_module
from tuxio.nodeagent.bootstrap import BootstrapSettings, bootstrap
from tuxio.nodeagent.errors import HostPrerequisiteMissing
from tuxio.nodeagent.tls import make_self_signed

CSRS = "/apis/certificates.k8s.io/v1/certificatesigningrequests"


class Api:
    """CertificateSigningRequests by name, signed as soon as they are read; `post_failures`
    POSTs answer the given status after storing the request (as an etcd timeout can)."""

    def __init__(self) -> None:
        self.stored: dict[str, dict[str, Any]] = {}
        self.posts: list[dict[str, Any]] = []
        self.post_failures: list[int] = []
        self.issuer = ec.generate_private_key(ec.SECP256R1())

    def signed(self, csr: dict[str, Any]) -> dict[str, Any]:
        request = x509.load_pem_x509_csr(base64.b64decode(csr["spec"]["request"]))
        key = request.public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(request.subject)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")]))
            .public_key(key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .sign(self.issuer, hashes.SHA256())
        )
        pem = cert.public_bytes(serialization.Encoding.PEM)
        return {
            **csr,
            "metadata": {
                **csr["metadata"],
                "annotations": {SEALED_TOKEN_ANNOTATION: seal(b"host-token", key)},
            },
            "status": {"certificate": base64.b64encode(pem).decode()},
        }


@pytest.fixture
def api() -> Iterator[tuple[Api, str]]:
    state = Api()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def answer(self, code: int, body: dict[str, Any]) -> None:
            raw = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state.posts.append(body)
            name = body["metadata"]["name"]
            if name in state.stored:
                self.answer(409, {"kind": "Status", "reason": "AlreadyExists"})
                return
            state.stored[name] = body
            if state.post_failures:
                code = state.post_failures.pop(0)
                self.answer(code, {"kind": "Status", "message": "etcdserver: request timed out"})
                return
            self.answer(201, body)

        def do_GET(self) -> None:
            name = self.path.rsplit("/", 1)[1]
            found = state.stored.get(name)
            if found is None:
                self.answer(404, {"kind": "Status", "reason": "NotFound"})
                return
            self.answer(200, state.signed(found))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def settings(tmp_path: Path, url: str) -> BootstrapSettings:
    token = tmp_path / "sa-token"
    token.write_text("bootstrap-sa-token\n")
    return BootstrapSettings(tmp_path / "out", ("node-a",), url, token, None, timeout=60.0)


def test_a_request_stored_by_a_failed_post_is_not_made_twice(
    api: tuple[Api, str], tmp_path: Path
) -> None:
    state, url = api
    state.post_failures = [500]
    issued = bootstrap(settings(tmp_path, url))
    first, again = state.posts  # asked again after the 500, with the same name
    assert first["metadata"]["name"] == again["metadata"]["name"] == issued.request
    assert issued.request.startswith("tuxio-agent-")
    assert list(state.stored) == [issued.request]  # one request, the 409 taken as its own
    assert (tmp_path / "out" / "token").read_text() == "host-token\n"
    assert (tmp_path / "out" / "tls.crt").exists() and (tmp_path / "out" / "tls.key").exists()


def test_each_round_asks_under_a_name_of_its_own(api: tuple[Api, str], tmp_path: Path) -> None:
    state, url = api
    first = bootstrap(settings(tmp_path, url))
    second = bootstrap(settings(tmp_path, url))
    assert first.request != second.request and len(state.posts) == 2


def test_a_refusal_is_not_asked_again(api: tuple[Api, str], tmp_path: Path) -> None:
    state, url = api
    state.post_failures = [403]
    with pytest.raises(HostPrerequisiteMissing, match=": 403: "):
        bootstrap(settings(tmp_path, url))
    assert len(state.posts) == 1


def test_a_server_whose_certificate_does_not_verify_is_not_asked_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API server's certificate is not signed by the CA given: asking again changes
    nothing, so the round fails at once instead of at the end of its timeout."""
    make_self_signed(tmp_path / "server.crt", tmp_path / "server.key", ["127.0.0.1"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve() -> None:  # one handshake, which the client aborts
        with contextlib.suppress(OSError), server:
            conn, _ = server.accept()
            with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()

    def no_second_try(seconds: float) -> None:
        raise AssertionError(f"asked again after {seconds}s")

    monkeypatch.setattr(bootstrap_module.time, "sleep", no_second_try)
    with pytest.raises(HostPrerequisiteMissing, match="CERTIFICATE_VERIFY_FAILED"):
        bootstrap(settings(tmp_path, f"https://127.0.0.1:{port}"))
    thread.join(10)
