"""Visitor tokens: minted and verified with a key ring; rotation; every way a token is refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tuxio.gateway.errors import Forbidden, Unauthorized
from tuxio.gateway.tokens import (
    AUDIENCE,
    KeyRing,
    MalformedKeyRing,
    UnknownKey,
    mint,
    verify,
)

NOW = datetime(2026, 11, 24, 17, 0, 0, tzinfo=UTC)
ISSUER = "tuxio-gateway"


def minted(ring: KeyRing, *, scopes=("terminal",), seconds=600, uid="uid-1", now=NOW) -> str:
    token, _ = mint(
        ring,
        issuer=ISSUER,
        namespace="team",
        name="visitor-42",
        uid=uid,
        scopes=list(scopes),
        lifetime=timedelta(seconds=seconds),
        now=now,
    )
    return token


def test_token_carries_the_contracts_claims() -> None:
    ring = KeyRing.generate(NOW)
    token, expires = mint(
        ring,
        issuer=ISSUER,
        namespace="team",
        name="visitor-42",
        uid="uid-1",
        scopes=["files", "terminal", "files"],
        lifetime=timedelta(seconds=600),
        now=NOW.replace(microsecond=123),
    )
    assert jwt.get_unverified_header(token) == {"alg": "EdDSA", "kid": ring.current, "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"iss", "aud", "sub", "ns", "name", "scopes", "iat", "exp", "jti"}
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE
    assert (claims["sub"], claims["ns"], claims["name"]) == ("uid-1", "team", "visitor-42")
    assert claims["scopes"] == ["files", "terminal"]
    assert claims["exp"] - claims["iat"] == 600
    assert expires == NOW + timedelta(seconds=600)
    found = verify(ring, token, issuer=ISSUER, now=NOW + timedelta(seconds=599))
    assert (found.namespace, found.name, found.uid) == ("team", "visitor-42", "uid-1")
    assert found.scopes == {"files", "terminal"}
    assert found.token_id == claims["jti"]


def test_rotation_keeps_old_tokens_until_their_key_is_removed() -> None:
    old = KeyRing.generate(NOW)
    old_token = minted(old)
    rotated = old.rotated(NOW + timedelta(seconds=1))
    assert rotated.current != old.current and set(rotated.keys) == {old.current, rotated.current}
    new_token = minted(rotated)
    assert jwt.get_unverified_header(new_token)["kid"] == rotated.current
    for token in (old_token, new_token):
        assert verify(rotated, token, issuer=ISSUER, now=NOW).uid == "uid-1"
    pruned = rotated.without(old.current)
    assert verify(pruned, new_token, issuer=ISSUER, now=NOW).uid == "uid-1"
    with pytest.raises(UnknownKey):
        verify(pruned, old_token, issuer=ISSUER, now=NOW)
    with pytest.raises(MalformedKeyRing, match="current key"):
        rotated.without(rotated.current)


def test_ring_round_trips_through_secret_data() -> None:
    ring = KeyRing.generate(NOW).rotated(NOW + timedelta(seconds=1))
    data = ring.to_secret_data()
    assert set(data) == {"current", *(f"{kid}.pem" for kid in ring.keys)}
    again = KeyRing.from_secret_data(data)
    assert again.current == ring.current and set(again.keys) == set(ring.keys)
    assert verify(again, minted(ring), issuer=ISSUER, now=NOW).name == "visitor-42"


def _pem() -> bytes:
    return next(v for k, v in KeyRing.generate(NOW).to_secret_data().items() if k.endswith(".pem"))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({}, "no `current`"),
        ({"current": b"k1"}, "not in the ring"),
        ({"current": b"k1", "k1.pem": b"junk"}, "not a PEM"),
        ({"current": b"bad.kid", "bad.kid.pem": _pem()}, "key id"),
    ],
)
def test_malformed_rings_are_refused(data: dict[str, bytes], problem: str) -> None:
    with pytest.raises(MalformedKeyRing, match=problem):
        KeyRing.from_secret_data(data)


def _forged(ring: KeyRing, **changes: object) -> str:
    """A token with the right shape, signed by a key the gateway never had."""
    claims = jwt.decode(minted(ring), options={"verify_signature": False}) | changes
    return jwt.encode(claims, Ed25519PrivateKey.generate(), algorithm="EdDSA",
                      headers={"kid": ring.current})  # fmt: skip


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda ring: minted(ring, seconds=60, now=NOW - timedelta(seconds=61)), "expired"),
        (lambda ring: minted(ring, seconds=1, now=NOW - timedelta(seconds=1)), "expired"),
        (lambda ring: _forged(ring), "invalid"),
        (lambda ring: minted(ring)[:-4] + "AAAA", "invalid"),
        (lambda ring: "not-a-token", "not a JWT"),
        (
            lambda ring: jwt.encode(
                {"sub": "x"}, "k" * 32, algorithm="HS256", headers={"kid": ring.current}
            ),
            "not one of",
        ),
        (lambda ring: _forged(ring, aud="someone-else"), "invalid"),
    ],
)
def test_bad_tokens_are_unauthorized(make, message: str) -> None:
    ring = KeyRing.generate(NOW)
    with pytest.raises(Unauthorized, match=message):
        verify(ring, make(ring), issuer=ISSUER, now=NOW)


def test_wrong_issuer_is_unauthorized() -> None:
    ring = KeyRing.generate(NOW)
    with pytest.raises(Unauthorized, match="invalid"):
        verify(ring, minted(ring), issuer="another-gateway", now=NOW)


def test_a_key_the_ring_lacks_is_unknown() -> None:
    with pytest.raises(UnknownKey):
        verify(KeyRing.generate(NOW), minted(KeyRing.generate(NOW)), issuer=ISSUER, now=NOW)


@pytest.mark.parametrize(
    ("namespace", "name", "scope", "message"),
    [
        ("team", "visitor-43", "terminal", "for sandbox team/visitor-42"),
        ("other", "visitor-42", "terminal", "for sandbox team/visitor-42"),
        ("team", "visitor-42", "files", "does not grant 'files'"),
    ],
)
def test_claims_bind_sandbox_and_scope(namespace: str, name: str, scope: str, message: str) -> None:
    ring = KeyRing.generate(NOW)
    claims = verify(ring, minted(ring), issuer=ISSUER, now=NOW)
    claims.require_scope("team", "visitor-42", "terminal")
    with pytest.raises(Forbidden, match=message):
        claims.require_scope(namespace, name, scope)


def test_claims_bind_the_uid() -> None:
    ring = KeyRing.generate(NOW)
    claims = verify(ring, minted(ring, uid="first"), issuer=ISSUER, now=NOW)
    claims.require_uid("first")
    with pytest.raises(Forbidden, match="earlier sandbox"):
        claims.require_uid("second")
