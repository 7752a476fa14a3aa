"""The agent's credentials picked up while it runs: the token file read again when it changes
(two tokens during a rotation), the serving certificate loaded into the live TLS context."""

from __future__ import annotations

import os
import socket
import ssl
import threading
from pathlib import Path

import pytest

from tuxio.nodeagent.credentials import CredentialsError, ServingCertificate, TokenFile
from tuxio.nodeagent.tls import make_self_signed

OLD, NEW = b"o" * 32, b"n" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _write(path: Path, *tokens: bytes) -> None:
    tmp = path.with_name(".tmp")
    tmp.write_bytes(b"".join(t + b"\n" for t in tokens))
    os.replace(tmp, path)


def test_a_rotation_takes_both_tokens_then_only_the_new(tmp_path: Path) -> None:
    path, clock = tmp_path / "token", Clock()
    _write(path, OLD)
    tokens = TokenFile(path, recheck=1.0, clock=clock)
    assert tokens.accepts(OLD) and not tokens.accepts(NEW)
    _write(path, NEW, OLD)
    assert not tokens.accepts(NEW)  # not looked at again within `recheck`
    clock.now = 1.0
    assert tokens.accepts(NEW) and tokens.accepts(OLD)
    _write(path, NEW + b"2", NEW)
    clock.now = 2.0
    assert tokens.accepts(NEW) and not tokens.accepts(OLD)
    assert not tokens.accepts(b"") and not tokens.accepts(NEW[:16])


def test_a_file_that_turns_bad_keeps_the_tokens_read_before(tmp_path: Path) -> None:
    path, clock = tmp_path / "token", Clock()
    _write(path, OLD)
    tokens = TokenFile(path, clock=clock)
    path.write_bytes(b"short\n")
    clock.now = 5.0
    assert tokens.accepts(OLD)
    path.unlink()
    clock.now = 10.0
    assert tokens.accepts(OLD)


@pytest.mark.parametrize(("content", "reason"), [(b"", "holds no token"), (b"abc\n", "shorter")])
def test_an_unusable_file_is_refused_at_start(tmp_path: Path, content: bytes, reason: str) -> None:
    (tmp_path / "token").write_bytes(content)
    with pytest.raises(CredentialsError, match=reason):
        TokenFile(tmp_path / "token")


def _served_certificate(context: ssl.SSLContext, cafile: Path) -> bytes:
    """Handshake with a server on `context` and return the certificate it presented."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve)
    thread.start()
    client = ssl.create_default_context(cafile=str(cafile))
    try:
        with (
            socket.create_connection(("127.0.0.1", port)) as raw,
            client.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            der = tls.getpeercert(binary_form=True)
            tls.sendall(b"x")
    finally:
        thread.join()
        listener.close()
    assert der is not None
    return der


def test_a_renewed_certificate_is_served_without_a_restart(tmp_path: Path) -> None:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    make_self_signed(cert, key, ["127.0.0.1"])
    first = cert.read_bytes()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    served = ServingCertificate(context, cert, key)
    (tmp_path / "first.crt").write_bytes(first)
    before = _served_certificate(context, tmp_path / "first.crt")
    assert not served.reload_if_changed()

    make_self_signed(tmp_path / "new.crt", tmp_path / "new.key", ["127.0.0.1"])
    os.replace(tmp_path / "new.key", key)  # the key first: the pair does not match yet
    assert not served.reload_if_changed()  # ...so the old pair stays in use
    assert _served_certificate(context, tmp_path / "first.crt") == before
    os.replace(tmp_path / "new.crt", cert)
    assert served.reload_if_changed()
    after = _served_certificate(context, cert)
    assert after != before
