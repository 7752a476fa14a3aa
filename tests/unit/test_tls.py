"""Agent certificates issued by a CA: what the DaemonSet's init container makes for its node.

The CA is made the way hack/create-agent-secrets.sh makes it (openssl), and clients check
the leaf in a real TLS handshake, in memory, as the operator's agent client does (the CA's
certificate as its only trust anchor), also with OpenSSL's strict X.509 checks.
"""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from tuxio.nodeagent.cli import main as agent_cli
from tuxio.nodeagent.tls import make_self_signed, make_signed

SCRIPT = Path(__file__).resolve().parents[2] / "hack" / "create-agent-secrets.sh"


def openssl_ca(directory: Path) -> tuple[Path, Path]:
    """The CA, with the very openssl command line of hack/create-agent-secrets.sh."""
    text = SCRIPT.read_text()
    command = re.search(r"^openssl req -x509 .*?2>/dev/null$", text, re.S | re.M)
    assert command, "the CA command is no longer in hack/create-agent-secrets.sh"
    argv = command.group(0).replace("\\\n", " ").replace("2>/dev/null", "")
    argv = argv.replace('"$work/', f'"{directory}/')
    subprocess.run(["bash", "-c", argv], check=True, capture_output=True)
    return directory / "ca.crt", directory / "ca.key"


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, name: str) -> None:
    """A TLS handshake in memory; raises ssl.SSLCertVerificationError when the client refuses."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=name)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for key, side in (("c", c), ("s", s)):
            if not done[key]:
                try:
                    side.do_handshake()
                    done[key] = True
                except ssl.SSLWantReadError:
                    pass
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if all(done.values()):
            return
    raise AssertionError("handshake did not finish")


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context


def client_context(ca: Path, strict: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca.read_text())
    if strict:
        context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("name", ["10.0.0.7", "worker-1"])
def test_leaf_from_the_openssl_ca_verifies(tmp_path: Path, name: str, strict: bool) -> None:
    ca_cert, ca_key = openssl_ca(tmp_path)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    make_signed(cert, key, ["10.0.0.7", "worker-1"], ca_cert, ca_key)
    handshake(server_context(cert, key), client_context(ca_cert, strict), name)
    assert key.stat().st_mode & 0o777 == 0o600


def test_leaf_refused_for_another_address(tmp_path: Path) -> None:
    ca_cert, ca_key = openssl_ca(tmp_path)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    make_signed(cert, key, ["10.0.0.7"], ca_cert, ca_key)
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        handshake(server_context(cert, key), client_context(ca_cert, False), "10.0.0.8")


def test_leaf_refused_by_another_ca(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ca_cert, ca_key = openssl_ca(tmp_path / "a")
    other_ca, _ = openssl_ca(tmp_path / "b")
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    make_signed(cert, key, ["10.0.0.7"], ca_cert, ca_key)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(server_context(cert, key), client_context(other_ca, False), "10.0.0.7")


def test_leaf_is_no_ca_and_ends_before_its_ca(tmp_path: Path) -> None:
    ca_cert, ca_key = tmp_path / "ca.crt", tmp_path / "ca.key"
    make_self_signed(ca_cert, ca_key, ["tuxio-agent-ca"], days=10)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    make_signed(cert, key, ["10.0.0.7"], ca_cert, ca_key, days=365)
    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    leaf.verify_directly_issued_by(ca)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc


def test_cli_issues_with_a_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ca_cert, ca_key = openssl_ca(tmp_path)
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    argv = ["tls", "generate", "--cert", str(cert), "--key", str(key), "--host", "10.0.0.7"]
    assert agent_cli([*argv, "--ca-cert", str(ca_cert), "--ca-key", str(ca_key)]) == 0
    handshake(server_context(cert, key), client_context(ca_cert, True), "10.0.0.7")
    capsys.readouterr()
    assert agent_cli([*argv, "--ca-cert", str(ca_cert)]) == 2
    assert "--ca-cert and --ca-key go together" in capsys.readouterr().err
