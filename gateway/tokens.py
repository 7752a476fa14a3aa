"""Visitor tokens: short-lived EdDSA (Ed25519) JWTs bound to one Sandbox's UID and scopes.

A token says: the bearer may open `scopes` (terminal, exec, files) of the Sandbox `ns/name`
whose UID is `sub`, until `exp`. It is signed with the current key of a key ring and names that
key in its header (`kid`); verification accepts a token of any key the ring holds, so a new key
can be added (and made current) while tokens of the previous one are still valid, and a key
removed from the ring refuses its tokens from then on.

The ring lives in a Secret (see `signingkeys`); this module is pure: keys in, tokens out.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import Forbidden, Unauthorized

__all__ = [
    "AUDIENCE",
    "KID_PATTERN",
    "SCOPES",
    "KeyRing",
    "MalformedKeyRing",
    "UnknownKey",
    "VisitorClaims",
    "mint",
    "new_kid",
    "token_kid",
    "verify",
]

AUDIENCE = "tuxio-visitor"
SCOPES = ("terminal", "exec", "files")
ALGORITHM = "EdDSA"
# A key's id is also its Secret data key (`<kid>.pem`): the Secret key alphabet, bounded.
KID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")
CURRENT = "current"


class MalformedKeyRing(ValueError):
    """The signing key Secret does not hold a usable ring."""


class UnknownKey(Exception):
    """A token names a key the ring does not hold (perhaps one added a moment ago)."""


def new_kid(now: datetime) -> str:
    """A key id that sorts by creation: the UTC date and time, then random hex."""
    return f"{now.astimezone(UTC):%Y%m%dt%H%M%S}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class KeyRing:
    """Signing keys by id, and which one signs."""

    current: str
    keys: Mapping[str, Ed25519PrivateKey]

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise MalformedKeyRing(f"the current key {self.current!r} is not in the ring")
        for kid in self.keys:
            if not KID_PATTERN.match(kid):
                raise MalformedKeyRing(f"key id {kid!r} is not of the form {KID_PATTERN.pattern}")

    @classmethod
    def generate(cls, now: datetime) -> KeyRing:
        kid = new_kid(now)
        return cls(kid, {kid: Ed25519PrivateKey.generate()})

    @classmethod
    def from_secret_data(cls, data: Mapping[str, bytes]) -> KeyRing:
        """The ring from a Secret's (decoded) data: `current` names the signing key, and each
        `<kid>.pem` is a PKCS#8 PEM Ed25519 private key. Other keys are ignored."""
        current = data.get(CURRENT, b"").decode().strip()
        if not current:
            raise MalformedKeyRing("no `current` key id")
        keys: dict[str, Ed25519PrivateKey] = {}
        for name, pem in data.items():
            if not name.endswith(".pem"):
                continue
            try:
                key = serialization.load_pem_private_key(pem, password=None)
            except ValueError as exc:
                raise MalformedKeyRing(f"{name}: not a PEM private key") from exc
            if not isinstance(key, Ed25519PrivateKey):
                raise MalformedKeyRing(f"{name}: not an Ed25519 key")
            keys[name.removesuffix(".pem")] = key
        return cls(current, keys)

    def to_secret_data(self) -> dict[str, bytes]:
        data = {CURRENT: self.current.encode()}
        for kid, key in self.keys.items():
            data[f"{kid}.pem"] = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        return data

    def rotated(self, now: datetime) -> KeyRing:
        """A new key, current from now on; the others kept to verify their tokens."""
        kid = new_kid(now)
        return KeyRing(kid, {**self.keys, kid: Ed25519PrivateKey.generate()})

    def without(self, kid: str) -> KeyRing:
        """The ring less `kid` (never the current key: rotate first)."""
        if kid == self.current:
            raise MalformedKeyRing(f"{kid!r} is the current key; rotate before removing it")
        if kid not in self.keys:
            raise MalformedKeyRing(f"no key {kid!r} in the ring")
        return KeyRing(self.current, {k: v for k, v in self.keys.items() if k != kid})

    def public(self, kid: str) -> Ed25519PublicKey:
        key = self.keys.get(kid)
        if key is None:
            raise UnknownKey(kid)
        return key.public_key()


@dataclass(frozen=True)
class VisitorClaims:
    """What a verified token grants."""

    namespace: str
    name: str
    uid: str
    scopes: frozenset[str]
    expires_at: datetime
    token_id: str

    def require_scope(self, namespace: str, name: str, scope: str) -> None:
        """Forbidden unless this token is for the Sandbox `namespace/name` and grants
        `scope` (checked before the Sandbox is looked up: no answer tells a token holder
        whether another Sandbox exists)."""
        if (self.namespace, self.name) != (namespace, name):
            raise Forbidden(f"the token is for sandbox {self.namespace}/{self.name}")
        if scope not in self.scopes:
            raise Forbidden(f"the token does not grant {scope!r}")

    def require_uid(self, uid: str) -> None:
        """Forbidden unless the Sandbox of that name is still the one the token was minted
        for: a namesake created since is another Sandbox."""
        if self.uid != uid:
            raise Forbidden(
                f"the token is for an earlier sandbox named {self.namespace}/{self.name}, "
                "since deleted"
            )


def mint(
    ring: KeyRing,
    *,
    issuer: str,
    namespace: str,
    name: str,
    uid: str,
    scopes: Sequence[str],
    lifetime: timedelta,
    now: datetime,
) -> tuple[str, datetime]:
    """A signed token and its expiry. Times are whole seconds, as JWTs carry them."""
    issued = now.astimezone(UTC).replace(microsecond=0)
    expires = issued + lifetime
    claims = {
        "iss": issuer,
        "aud": AUDIENCE,
        "sub": uid,
        "ns": namespace,
        "name": name,
        "scopes": sorted(set(scopes)),
        "iat": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": uuid.uuid4().hex,
    }
    token = jwt.encode(
        claims, ring.keys[ring.current], algorithm=ALGORITHM, headers={"kid": ring.current}
    )
    return token, expires


def token_kid(token: str) -> str:
    """The key id a token names, before any verification; Unauthorized when it is no JWT."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as exc:
        raise Unauthorized("the visitor token is not a JWT") from exc
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM or not isinstance(kid, str):
        raise Unauthorized("the visitor token is not one of this gateway's")
    return kid


def verify(ring: KeyRing, token: str, *, issuer: str, now: datetime) -> VisitorClaims:
    """The claims of a token signed by a key of `ring`, not expired; UnknownKey when it names
    a key the ring lacks (the caller may re-read the ring once), Unauthorized otherwise."""
    public = ring.public(token_kid(token))
    try:
        claims = jwt.decode(
            token,
            public,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=issuer,
            options={"require": ["exp", "iat", "sub", "iss", "aud", "jti"], "verify_exp": False},
        )
    except jwt.InvalidTokenError as exc:
        raise Unauthorized(f"the visitor token is invalid: {exc}") from exc
    expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
    # Checked here rather than by PyJWT, against the caller's clock (tests pass theirs).
    if expires <= now:
        raise Unauthorized("the visitor token has expired")
    scopes = claims.get("scopes")
    namespace, name = claims.get("ns"), claims.get("name")
    if (
        not isinstance(scopes, list)
        or not isinstance(namespace, str)
        or not isinstance(name, str)
        or not isinstance(claims["sub"], str)
    ):
        raise Unauthorized("the visitor token lacks its sandbox or scopes")
    return VisitorClaims(
        namespace=namespace,
        name=name,
        uid=claims["sub"],
        scopes=frozenset(str(s) for s in scopes),
        expires_at=expires,
        token_id=str(claims["jti"]),
    )
