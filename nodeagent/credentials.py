"""The agent's credentials, picked up again while it runs: the bearer tokens it takes and its
serving certificate. Both are files that the bootstrap (tuxio.nodeagent.bootstrap) renews
beside it; neither a new token nor a new certificate needs a restart.

During a rotation the token file holds two lines, the new token and the one before: the agent
takes either until the next rotation drops the old one, so no client is locked out while it
learns the new one. A certificate is loaded into the live TLS context (new handshakes get it;
connections open keep theirs).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import ssl
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["MIN_TOKEN_BYTES", "CredentialsError", "ServingCertificate", "TokenFile"]

log = logging.getLogger(__name__)

MIN_TOKEN_BYTES = 16


class CredentialsError(ValueError):
    """A token file or certificate that cannot be used."""


def _stamp(*paths: Path) -> tuple[tuple[int, int, int], ...]:
    stamps = []
    for path in paths:
        st = os.stat(path)
        stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def read_tokens(path: Path) -> tuple[bytes, ...]:
    """Every token in the file (one a line); CredentialsError if none is usable."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise CredentialsError(f"cannot read the token file {path}: {exc.strerror}") from exc
    tokens = tuple(line.strip() for line in lines if line.strip())
    if not tokens:
        raise CredentialsError(f"the token file {path} holds no token")
    short = [t for t in tokens if len(t) < MIN_TOKEN_BYTES]
    if short:
        raise CredentialsError(f"a token in {path} is shorter than {MIN_TOKEN_BYTES} bytes")
    return tokens


class TokenFile:
    """The tokens of a file, read again when it changes (looked at no more than once per
    `recheck` seconds). A file that turns unreadable or empty keeps the tokens it had."""

    def __init__(
        self,
        path: Path | None,
        *,
        fixed: tuple[bytes, ...] = (),
        recheck: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self._recheck = recheck
        self._clock = clock
        self._tokens = fixed
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._checked = float("-inf")
        if path is not None:
            self._stamp = _stamp(path)
            self._tokens = read_tokens(path)

    @classmethod
    def of(cls, *tokens: bytes) -> TokenFile:
        """Fixed tokens, no file (the schema's app, tests)."""
        return cls(None, fixed=tokens)

    def tokens(self) -> tuple[bytes, ...]:
        now = self._clock()
        if self.path is not None and now - self._checked >= self._recheck:
            self._checked = now
            try:
                stamp = _stamp(self.path)
                if stamp != self._stamp:
                    self._tokens, self._stamp = read_tokens(self.path), stamp
                    log.info("token file %s read again: %d token(s)", self.path,
                             len(self._tokens))  # fmt: skip
            except (OSError, CredentialsError) as exc:
                log.warning("token file %s not usable (%s); keeping the tokens read before",
                            self.path, exc)  # fmt: skip
        return self._tokens

    def accepts(self, given: bytes) -> bool:
        """Whether `given` is one of the tokens, compared in constant time with each (so the
        answer leaks neither how much of a guess was right nor which token matched)."""
        matched = False
        for token in self.tokens():
            matched |= hmac.compare_digest(given, token)
        return matched and bool(given)


class ServingCertificate:
    """The certificate and key of a live TLS context, loaded again when the files change."""

    def __init__(self, context: ssl.SSLContext, cert: Path, key: Path) -> None:
        self.context = context
        self.cert = cert
        self.key = key
        self._stamp = _stamp(cert, key)

    def reload_if_changed(self) -> bool:
        """Load the files if they changed since; True if a new pair is in use. A pair that
        does not load (the key written but not the certificate yet) keeps the old one until
        the next look."""
        try:
            stamp = _stamp(self.cert, self.key)
            if stamp == self._stamp:
                return False
            self.context.load_cert_chain(str(self.cert), str(self.key))
        except (OSError, ssl.SSLError) as exc:
            log.warning("serving certificate %s not loaded (%s); keeping the one in use",
                        self.cert, exc)  # fmt: skip
            return False
        self._stamp = stamp
        log.info("serving certificate %s loaded", self.cert)
        return True

    async def watch(self, every: float = 2.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.reload_if_changed()
