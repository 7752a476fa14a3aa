"""The token signing keys, kept in one Secret (tuxio-system/tuxio-gateway-signing-key).

Layout of the Secret's data: `current` is the id of the key that signs; every `<kid>.pem` is a
PKCS#8 PEM Ed25519 private key that verifies (see `tokens.KeyRing`). The manifests ship the
Secret empty (no key in a repository); the first gateway replica to start fills it with one key,
by a patch conditional on the resourceVersion it read, so two replicas starting at once cannot
both write a key (the second gets a conflict and reads the first's). Rotation
(`tuxio-gateway signing-key rotate`) adds a key and makes it current; `remove` drops an old one
once the tokens it signed have expired. Every replica watches the Secret, and a token naming a
key it does not know yet makes it read the Secret at once (at most once a second), so a replica
that has not seen a rotation yet still accepts the new key's tokens.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .errors import NotReady, Unauthorized
from .kube import Kube, KubeError, KubeNotFound
from .tokens import KeyRing, MalformedKeyRing, UnknownKey, VisitorClaims, verify

__all__ = ["SigningKeys", "read_ring", "secret_path", "write_ring"]

log = logging.getLogger(__name__)


def secret_path(namespace: str, name: str = "") -> str:
    path = f"/api/v1/namespaces/{namespace}/secrets"
    return f"{path}/{name}" if name else path


def _data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


async def read_ring(kube: Kube, namespace: str, name: str) -> tuple[KeyRing | None, str]:
    """The ring in the Secret (None while it holds none) and the Secret's resourceVersion."""
    secret = await kube.get(secret_path(namespace, name))
    version = str(secret["metadata"]["resourceVersion"])
    data = _data(secret)
    if not data:
        return None, version
    return KeyRing.from_secret_data(data), version


async def write_ring(
    kube: Kube,
    namespace: str,
    name: str,
    ring: KeyRing,
    resource_version: str,
    before: KeyRing | None = None,
) -> None:
    """Write `ring` to the Secret if it is still at `resource_version` (a KubeError 409
    otherwise); the keys of `before` that `ring` lacks are removed."""
    data: dict[str, str | None] = {
        key: base64.b64encode(value).decode() for key, value in ring.to_secret_data().items()
    }
    if before is not None:
        for key in before.to_secret_data():
            data.setdefault(key, None)
    await kube.request(
        "PATCH",
        secret_path(namespace, name),
        body={"metadata": {"resourceVersion": resource_version}, "data": data},
        content_type="application/merge-patch+json",
    )


class SigningKeys:
    """The current ring, fed by a reflector on the Secret (a `kube.Store`)."""

    def __init__(
        self,
        kube: Kube,
        namespace: str,
        name: str,
        *,
        refresh_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.ring: KeyRing | None = None
        self.loaded = asyncio.Event()
        self._refreshed_at = float("-inf")
        self._refresh_lock = asyncio.Lock()

    # ----- the Store of the reflector ------------------------------------------------------

    def replace(self, items: list[dict[str, Any]]) -> None:
        for item in items:
            self.apply("ADDED", item)

    def apply(self, kind: str, item: dict[str, Any]) -> None:
        if (item.get("metadata") or {}).get("name") != self.name:
            return
        if kind == "DELETED":
            log.error("the signing key Secret %s/%s was deleted", self.namespace, self.name)
            return  # the keys in memory keep working until it is back
        data = _data(item)
        if not data:
            return
        try:
            ring = KeyRing.from_secret_data(data)
        except MalformedKeyRing as exc:
            log.error("the signing key Secret %s/%s: %s", self.namespace, self.name, exc)
            return
        if self.ring is None or (ring.current, set(ring.keys)) != (
            self.ring.current,
            set(self.ring.keys),
        ):
            log.info("signing keys: %s (current %s)", ", ".join(sorted(ring.keys)), ring.current)
        self.ring = ring
        self.loaded.set()

    # ----- first key -----------------------------------------------------------------------

    async def ensure_key(self) -> None:
        """Give the Secret its first key if it has none (at first start), racing replicas
        settled by the API server; a missing Secret is waited for."""
        while True:
            try:
                ring, version = await read_ring(self.kube, self.namespace, self.name)
            except KubeNotFound:
                log.error(
                    "no Secret %s/%s: apply manifests/base/gateway (it is created empty there)",
                    self.namespace,
                    self.name,
                )
                await asyncio.sleep(5)
                continue
            if ring is not None:
                self.apply("ADDED", {"metadata": {"name": self.name}, "data": _encoded(ring)})
                return
            first = KeyRing.generate(datetime.now(UTC))
            try:
                await write_ring(self.kube, self.namespace, self.name, first, version)
            except KubeError as exc:
                if exc.status != 409:
                    raise
                continue  # another replica wrote first: read its key
            log.info("signing keys: made the first key %s", first.current)
            self.apply("ADDED", {"metadata": {"name": self.name}, "data": _encoded(first)})
            return

    # ----- verification --------------------------------------------------------------------

    async def verify(self, token: str, *, issuer: str) -> VisitorClaims:
        """Verify `token`; a token of an unknown key re-reads the Secret first (rate-limited)."""
        ring = self._ring()
        try:
            return verify(ring, token, issuer=issuer, now=datetime.now(UTC))
        except UnknownKey:
            pass
        ring = await self._refresh()
        try:
            return verify(ring, token, issuer=issuer, now=datetime.now(UTC))
        except UnknownKey:
            raise Unauthorized(
                "the visitor token was signed with a key this gateway does not hold"
            ) from None

    def _ring(self) -> KeyRing:
        if self.ring is None:
            raise NotReady("the token signing keys are not loaded yet")
        return self.ring

    async def _refresh(self) -> KeyRing:
        async with self._refresh_lock:
            if self.clock() - self._refreshed_at >= self.refresh_seconds:
                self._refreshed_at = self.clock()
                try:
                    ring, _ = await read_ring(self.kube, self.namespace, self.name)
                except (KubeError, MalformedKeyRing) as exc:
                    log.warning("re-reading the signing keys: %s", exc)
                else:
                    if ring is not None:
                        self.ring = ring
        return self._ring()


def _encoded(ring: KeyRing) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in ring.to_secret_data().items()}
