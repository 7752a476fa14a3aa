"""Claims of warm containers: which containers are taken, and the claim made at admission.

A container belongs to a Sandbox once some Sandbox's status or assignment names it (the
index's book) or once this process claimed it and the watch has not shown that yet (`Claims`).
Such a container is out of every pool's inventory, so it is never adopted twice.

`ClaimAtAdmission` is what the claim webhook asks (tuxio.operator.admission): the assignment to
store with a Sandbox being created, in the very write that creates it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from tuxio.common.timeutil import Clock, format_time

from .index import ClusterIndex, SandboxBook
from .inventory import Inventories, PoolState
from .launches import Launches
from .models import SandboxSpec
from .placement import PlacementPolicy, allocations, claimed, request_for, take_warm

__all__ = ["ClaimAtAdmission", "Claims"]

log = logging.getLogger(__name__)

# Logged for each container given back. Given back once its hold ended, a container is one
# too many: the pool replaced it when it was taken (bench/chaos_audit.py counts these lines).
# Given back before a placement (give_back_for), it is taken again at once.
NEVER_STORED = "claim of %s never stored: %s back in the pool"
HOLD_ENDED = NEVER_STORED + " (its hold ended)"


class Claims:
    """Warm containers claimed by this process, until the Sandbox index shows the claim.

    A claim made at admission may never be stored (a later admission step or the storage
    refuses the Sandbox): it is held for its ttl, longer than the API server takes to answer a
    request, then the container is free again. Were it still stored after that, the agent's
    compare-and-set would give the container to one claimant only.
    """

    def __init__(self, book: SandboxBook, monotonic: Callable[[], float], ttl: float = 600.0):
        self.ttl = ttl
        self._book = book
        self._monotonic = monotonic
        self._until: dict[str, float] = {}

    def add(self, name: str, ttl: float | None = None) -> None:
        self._until[name] = self._monotonic() + (self.ttl if ttl is None else ttl)

    def held(self, name: str) -> bool:
        """Whether this process claimed `name` within its ttl."""
        until = self._until.get(name)
        if until is None:
            return False
        if until < self._monotonic():
            del self._until[name]
            return False
        return True

    def release(self, name: str) -> None:
        """No longer held by this process (the claim it made will never be stored)."""
        self._until.pop(name, None)

    def settle(self, state: PoolState) -> None:
        """The admission takes of `state`: forgotten once a stored Sandbox names them, given
        back to the pool once their hold ended unused."""
        for name, (_, owner) in list(state.admitted.items()):
            if self._book.names_container(name):
                del state.admitted[name]
            elif not self.held(name):
                state.give_back(name)
                log.info(HOLD_ENDED, owner, name)

    def give_back_for(self, state: PoolState, sandbox: str) -> list[str]:
        """Give back what was taken for `sandbox` ("ns/name"), which is stored without it:
        by admission, when the API server went on without the webhook's answer (failurePolicy
        Ignore, past its timeout), or by an earlier placement whose write failed. Before the
        operator places that Sandbox (again), so the container is not out of the pool for the
        rest of the hold. Returns the names given back."""
        back = []
        for name, (_, owner) in list(state.admitted.items()):
            if owner != sandbox:
                continue
            if self._book.names_container(name):
                del state.admitted[name]  # some stored Sandbox has it after all: not back
                continue
            self.release(name)
            state.give_back(name)
            back.append(name)
            log.info(NEVER_STORED, sandbox, name)
        return back

    def taken(self, name: str) -> bool:
        """Whether the container belongs to a Sandbox: named in a status or an assignment,
        or claimed just now."""
        return self._book.names_container(name) or self.held(name)


class ClaimAtAdmission:
    """The claim of a Sandbox being created: a warm container taken from its pool, as the
    assignment to store with the new Sandbox. None when there is nothing to claim (no
    poolRef, no such pool, its inventory not read yet, no ready warm container) or the spec is
    invalid (the API server refuses it next, with its own message): the operator places the
    Sandbox once it is stored, as it places any other."""

    def __init__(
        self,
        index: ClusterIndex,
        inventories: Inventories,
        claims: Claims,
        policy: PlacementPolicy,
        clock: Clock,
        hold_seconds: float,
        launches: Launches,
    ) -> None:
        self.index = index
        self.inventories = inventories
        self.claims = claims
        self.policy = policy
        self.clock = clock
        self.hold_seconds = hold_seconds
        self.launches = launches

    def __call__(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        meta = body.get("metadata") or {}
        try:
            spec = SandboxSpec.model_validate(body.get("spec") or {})
        except ValueError:
            return None
        if spec.pool_ref is None:
            return None
        pool = self.index.pool(meta.get("namespace") or "", spec.pool_ref.name)
        if pool is None:
            return None
        template = pool.spec.template
        request, fallback = request_for(spec, template, self.policy.locator)
        used = allocations(self.index, self.inventories)
        state = self.inventories.get(pool.uid)
        if state is not None:
            self.claims.settle(state)
        hosts = self.index.hosts
        warm = take_warm(state, template, hosts, used, request, self.policy, self.clock.monotonic())
        if warm is None:
            return None
        assert state is not None  # take_warm found one there
        # Not stored yet, maybe never: held until the Sandbox shows up, or for a while.
        self.claims.add(warm.name, ttl=self.hold_seconds)
        state.admitted[warm.name] = (warm, f"{pool.namespace}/{meta.get('name') or ''}")
        self.launches.admitted(warm.name)  # the claim latency counts from here
        log.debug("claim at admission: %s of pool %s/%s", warm.name, pool.namespace, pool.name)
        assignment = claimed(pool, warm, hosts[warm.host], request, fallback)
        return assignment.record([], 1, None, format_time(self.clock.now()))
