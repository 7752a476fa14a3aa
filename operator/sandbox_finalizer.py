"""Sandbox deletion: destroy the container, then let the Sandbox go.

A Sandbox is held by tuxio's own finalizer (tuxio.operator.labels.FINALIZER), put on with its
placement; kopf calls deletion handlers only under its own, so the handlers start
`finalize_and_release` for every Sandbox being deleted that still holds it (after a restart
too). It destroys the container through the agent, retrying with backoff, unless the host is
gone or lost (the orphan sweep removes the container if the host ever returns), then drops
the finalizer with a resourceVersion precondition.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tuxio.common.timeutil import Clock

from .agentclient import AgentRejected, AgentUnauthorized, AgentUnreachable
from .agents import AgentRegistry, CredentialsMissing
from .backoff import Backoff
from .conditions import Reason
from .errors import RequeueAfter
from .events import EventSink
from .host_status import Grace, host_lost
from .index import ClusterIndex
from .kube import Kube
from .labels import FINALIZER, SANDBOX_UID
from .ledger_writer import LedgerWriter
from .records import assignment_of

__all__ = ["SandboxFinalizer"]

log = logging.getLogger(__name__)


@dataclass
class SandboxFinalizer:
    """Destroys deleted Sandboxes' containers and releases them."""

    api: Kube
    agents: AgentRegistry
    index: ClusterIndex
    events: EventSink
    clock: Clock
    backoff: Backoff
    grace: Grace
    ledger: LedgerWriter

    async def finalize(self, body: Mapping[str, Any], failures: int = 0) -> None:
        """Deletion: record the Sandbox in the ledger with its final counters, then destroy
        the container, unless its host is gone for good."""
        meta, recorded = body["metadata"], assignment_of(body)
        self.index.assumed.forget(meta["uid"])
        host_name, container = recorded.get("host"), recorded.get("containerName")
        if not host_name or not container:
            await self.ledger.record(body, None)
            return
        host = self.index.hosts.get(host_name)
        if host is None:
            await self.ledger.record(body, None)
            message = f"SandboxHost {host_name} is gone; nothing to destroy"
            self.events.normal(body, Reason.HOST_GONE, message)
            return
        if host_lost(host, self.grace, self.clock.now()):
            await self.ledger.record(body, None)
            message = f"{host_name} is lost; its container is left to the orphan sweep"
            self.events.warning(body, Reason.HOST_LOST, message)
            return
        try:
            agent = await self.agents.client(host)
            # The final counters, read while the container still exists (a retry after a
            # kill finds it gone: the ledger keeps what the first try wrote).
            seen = await agent.get(container)
            owner = None if seen is None else seen.labels.get(SANDBOX_UID)
            if seen is not None and owner != meta["uid"]:
                # Named by a decision that never got its agent's answer (the annotation): a
                # warm container another claim won meanwhile, now that Sandbox's, or still the
                # pool's. Destroyed here, it took the other Sandbox's machine away.
                await self.ledger.record(body, None)
                whose = f"Sandbox {owner}'s" if owner else "a pool's warm container"
                message = f"container {container} on {host_name} is {whose}; left to it"
                self.events.normal(body, Reason.NOT_OURS, message)
                return
            await self.ledger.record(body, seen.usage if seen is not None else None)
            await agent.delete(container)
        except (AgentUnreachable, AgentUnauthorized, CredentialsMissing) as exc:
            raise RequeueAfter(
                f"cannot reach {host_name} to destroy {container}: {exc}",
                self.backoff.delay(failures),
            ) from None
        except AgentRejected as exc:
            self.events.warning(body, Reason.AGENT_REJECTED, str(exc))
            return
        self.events.normal(body, Reason.DELETED, f"container {container} destroyed on {host_name}")

    async def finalize_and_release(self, body: Mapping[str, Any]) -> None:
        """Destroy a deleted Sandbox's container, retrying with backoff until that is done or
        no longer possible, then drop FINALIZER so the API server lets the Sandbox go."""
        meta = body["metadata"]
        failures = 0
        while True:
            try:
                await self.finalize(body, failures)
                await self.api.remove_sandbox_finalizer(
                    meta["namespace"], meta["name"], meta["uid"], FINALIZER
                )
                return
            except RequeueAfter as exc:
                delay = exc.delay
                log.warning(
                    "%s/%s: %s; again in %.1fs", meta["namespace"], meta["name"], exc, delay
                )
            except Exception as exc:
                delay = self.backoff.delay(failures)
                log.warning(
                    "%s/%s: finalizing failed: %r; again in %.1fs",
                    meta["namespace"],
                    meta["name"],
                    exc,
                    delay,
                )
            await asyncio.sleep(delay)
            failures += 1
