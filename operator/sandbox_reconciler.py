"""Sandbox reconciliation, in kubebuilder's order every time.

load -> (being deleted: tuxio.operator.sandbox_finalizer) -> observe (the recorded placement,
or a new one recorded before the agent hears of it) -> act on the child (one idempotent PUT of
the container) ->
status from pure functions (tuxio.operator.sandbox_status) -> write only what changed, in one
patch. Every step can be interrupted: the decision lives in the API, the PUT is idempotent, so
running it again after a crash converges to the same single container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tuxio.common.locks import KeyedLocks
from tuxio.common.timeutil import Clock, format_time, seconds_since
from tuxio.nodeagent.models import ContainerSpec, ContainerStatus

from .agentclient import AgentClient, AgentRejected, AgentUnauthorized, AgentUnreachable
from .agents import AgentRegistry, CredentialsMissing
from .backoff import Backoff
from .claims import Claims
from .conditions import READY, SCHEDULED, Reason, find_condition
from .containers import container_spec
from .errors import RequeueAfter, TerminalError
from .events import EventSink
from .index import ClusterIndex
from .inventory import Inventories, PoolState
from .kube import ApiError, Kube, NotFound
from .labels import ASSIGNMENT, FINALIZER, SANDBOX_UID
from .launches import Launches
from .placement import ADOPT_IF_MATCH, Assignment, PlacementPolicy, Want, place
from .records import HostRecord, PoolInfo
from .sandbox_state import Loaded, StatusWriter
from .sandbox_status import (
    Problem,
    expires_at,
    problem_status,
    running_status,
)

__all__ = ["ContainerTaken", "SandboxReconciler", "SandboxTimings", "first_put"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SandboxTimings:
    """The settings a Sandbox's reconciliation waits by."""

    backoff: Backoff
    unschedulable_retry: float
    usage_every: float
    inventory_wait: float = 5.0  # how long a claim waits for a pool's inventory after a start


# The fields of a decision that make a Sandbox placed once they are in its status.
PLACEMENT = ("host", "containerName")


class ContainerTaken(Exception):
    """The container a placement names belongs to another Sandbox (a warm container another
    claim won), or a claimed one is gone: place again."""


class _Spans:
    """Where a reconciliation spends its time, logged for benchmarks and slow-path hunting."""

    def __init__(self) -> None:
        self.started = time.time()
        self._last = time.perf_counter()
        self.spans: dict[str, float] = {}

    def mark(self, span: str) -> None:
        now = time.perf_counter()
        self.spans[span] = self.spans.get(span, 0.0) + (now - self._last) * 1000
        self._last = now

    def report(self) -> str:
        return " ".join(f"{k}={v:.1f}ms" for k, v in self.spans.items())


@dataclass
class _Run:
    """What one reconciliation has done so far: the status written and pending, whether it
    put the finalizer on, and where its time went."""

    sandbox: Loaded
    writer: StatusWriter
    held: bool = False
    spans: _Spans = field(default_factory=_Spans)


@dataclass
class SandboxReconciler:
    """Converges Sandboxes: their placement, their container, their status."""

    api: Kube
    agents: AgentRegistry
    index: ClusterIndex
    inventories: Inventories
    claims: Claims
    policy: PlacementPolicy
    events: EventSink
    clock: Clock
    timings: SandboxTimings
    launches: Launches
    locks: KeyedLocks = field(default_factory=KeyedLocks)
    # The generation of each Sandbox whose reconciliation last ended writing its status, so
    # that work queued with an older body of it is skipped (in memory only: a restarted
    # operator reconciles everything once, which is idempotent).
    settled: dict[str, int] = field(default_factory=dict)

    def _at(self) -> str:
        return format_time(self.clock.now())

    # ----- reconcile ---------------------------------------------------------------------

    async def reconcile(self, body: Mapping[str, Any], failures: int = 0) -> None:
        """Converge one Sandbox: place it if needed, then PUT its container and write status
        (one status write: the decision's fields, if new, together with the agent's answer).

        A retry (`failures` > 0) reads the Sandbox afresh first: the attempt that failed may
        have written to it after `body` was read (its placement decision, with a warm
        container claimed and adopted) while the watch, cut by an API server restart, has
        not brought that yet. Placed anew from the old body, the Sandbox got a second
        container, and the first, adopted for it, was left behind until the orphan sweep
        (found by make chaos)."""
        if failures:
            meta = body.get("metadata") or {}
            try:
                fresh = await self.api.get_sandbox(
                    str(meta.get("namespace")), str(meta.get("name"))
                )
            except NotFound:
                return  # deleted meanwhile: its finalizer has the rest
            if (fresh.get("metadata") or {}).get("uid") != meta.get("uid"):
                return  # a namesake: not this Sandbox's work
            body = fresh
        sandbox = Loaded.of(body)
        async with self.locks.hold(sandbox.uid):
            run = _Run(
                sandbox, StatusWriter(self.api, sandbox.namespace, sandbox.name, sandbox.status)
            )
            template, pool = await self._template(run)
            adopt = None
            if not sandbox.placed:
                adopt = await self._observe_placement(run, template, pool)
            observed = await self._converge(run, template, adopt, failures)
            wanted = run.writer.wanted
            usage_due = _usage_due(wanted, self.timings.usage_every, self.clock)
            await run.writer.write(
                running_status(wanted, observed, sandbox.generation, usage_due, self._at())
            )
            run.spans.mark("status")
            self._count_launch(run, template)
            self.settled[sandbox.uid] = sandbox.generation
            log.info(
                "timing %s/%s started=%.6f %s",
                sandbox.namespace,
                sandbox.name,
                run.spans.started,
                run.spans.report(),
            )
            if run.writer.wanted.get("phase") != wanted.get("phase"):
                self._tell_phase(sandbox, run.writer.wanted)

    def _count_launch(self, run: _Run, template: str) -> None:
        """The status just written made a new Sandbox Ready: its claim latency (observed once
        per Sandbox however many runs it took: tuxio.operator.launches)."""
        before, after = run.sandbox.status, run.writer.written
        if before.get("startedAt") or before.get("phase") == "Stopped" or _ready(before):
            return  # not new: it ran before (a start after a stop is no claim)
        if not _ready(after):
            return
        scheduled = find_condition(after.get("conditions"), SCHEDULED)
        warm = scheduled.get("reason") == Reason.CLAIMED
        pool_ref = run.sandbox.spec.pool_ref
        pool = (run.sandbox.namespace, pool_ref.name) if pool_ref is not None else None
        self.launches.ready(run.sandbox.uid, warm, template, pool)

    async def _template(self, run: _Run) -> tuple[str, PoolInfo | None]:
        """The template to clone and, for a poolRef not placed yet, the pool. Once placed,
        the template is the recorded one: a claimed Sandbox outlives its pool."""
        if run.sandbox.recorded.get("template"):
            return str(run.sandbox.recorded["template"]), None
        try:
            return self._pool_of(run.sandbox)
        except RequeueAfter as exc:
            await self._tell(run, Problem.pool_missing(str(exc)), with_pending=False)
            raise

    def _pool_of(self, sandbox: Loaded) -> tuple[str, PoolInfo | None]:
        spec = sandbox.spec
        if spec.template:
            return spec.template, None
        assert spec.pool_ref is not None
        pool = self.index.pool(sandbox.namespace, spec.pool_ref.name)
        if pool is None:
            raise RequeueAfter(f"SandboxPool {spec.pool_ref.name} does not exist", 2)
        return pool.spec.template, pool

    async def _observe_placement(
        self, run: _Run, template: str, pool: PoolInfo | None
    ) -> str | None:
        """A Sandbox without a host in status is being placed: by the decision stored with it
        (a claim made at admission, or the record of an earlier run that stopped after
        writing it), else by a decision made and recorded now. Returns the ETag a claimed warm
        container must still have."""
        decided = dict(run.sandbox.recorded)
        if not decided:
            decided = await self._place(run, template, pool)
            run.spans.mark("decision")
        elif decided.get("containerName"):
            # Stored, though a write that failed, or an admission, held it as maybe not.
            self.inventories.stored(str(decided["containerName"]))
        adopt = decided.pop(ADOPT_IF_MATCH, None)
        decided["expiresAt"] = expires_at(run.sandbox.created, run.sandbox.spec)
        run.writer.decide(decided)
        return None if adopt is None else str(adopt)

    async def _place(self, run: _Run, template: str, pool: PoolInfo | None) -> dict[str, Any]:
        """Choose the container's host (adopting a warm container when the pool has one) and
        write the decision to the API, before the agent hears of it: after a crash the next
        run finds it there and neither places the sandbox twice nor hands the container to
        another. Returns the decision (its status fields go with the next status write)."""
        sandbox = run.sandbox
        owner = f"{sandbox.namespace}/{sandbox.name}"
        state: PoolState | None = None
        if pool is not None:
            await self._inventory_loaded(pool)
            state = self.inventories.get(pool.uid)
            if state is not None:
                # Stored without a claim: whatever admission, or an earlier decision whose
                # write failed, took for it is free again.
                self.claims.give_back_for(state, owner)
                self.claims.settle(state)
        want = Want(sandbox.uid, sandbox.spec, template, pool)
        decision = place(want, self.index, self.inventories, self.policy, self.clock.monotonic())
        if not isinstance(decision, Assignment):
            await self._tell(run, Problem.unschedulable(decision.message), with_pending=False)
            raise RequeueAfter(decision.message, self.timings.unschedulable_retry)
        self._note(sandbox.uid, decision)
        conditions = list(run.writer.wanted.get("conditions") or [])
        expires = expires_at(sandbox.created, sandbox.spec)
        decided = decision.record(conditions, sandbox.generation, expires, self._at())
        # One write, to metadata: the decision and the finalizer together (a status write and
        # a metadata write to one object would contend in the API server). Status follows
        # with the agent's answer; until then the index reads the decision from here.
        try:
            await self._hold(run, {ASSIGNMENT: json.dumps(decided, sort_keys=True)})
        except Exception:
            if decision.taken is not None and state is not None:
                # Maybe not stored (a conflict, the API server gone): held for this Sandbox
                # like a claim at admission, so its next try gives the container back before
                # it takes one again (a retry reads the Sandbox afresh, and places it again
                # only if the decision is not there), rather than leaving it out of the pool
                # for the claim's whole hold while the pool made another.
                state.admitted[decision.container] = (decision.taken, owner)
            raise
        # No Event here: the decision is told in the Event of the phase it leads to (one
        # Event per new Sandbox, not two: each is an API write), and in the Scheduled condition.
        return decided

    async def _inventory_loaded(self, pool: PoolInfo) -> None:
        """Just started: the pool's inventory is being read from the agents; wait a little."""
        state = self.inventories.get(pool.uid)
        if state is not None and not state.loaded.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.loaded.wait(), self.timings.inventory_wait)

    def _note(self, uid: str, assignment: Assignment) -> None:
        """Count the decision until the watch brings it back: a claim, or the room taken."""
        if assignment.adopt_if_match is not None:
            self.claims.add(assignment.container)
        elif assignment.assumed is not None:
            self.index.assumed.assume(uid, assignment.host, assignment.assumed)

    async def _hold(self, run: _Run, annotations: dict[str, str] | None = None) -> None:
        """Put FINALIZER on the Sandbox, with `annotations`, in one write (nothing to do when
        it holds FINALIZER already and there are no annotations)."""
        sandbox = run.sandbox
        finalizers = list(sandbox.finalizers)
        if run.held and FINALIZER not in finalizers:
            finalizers.append(FINALIZER)
        if FINALIZER in finalizers and not annotations:
            return
        meta = {**sandbox.body["metadata"], "finalizers": finalizers}
        try:
            await self.api.hold_sandbox(
                sandbox.namespace, sandbox.name, meta, FINALIZER, annotations
            )
        except NotFound:
            raise RequeueAfter("the Sandbox is gone", 1) from None
        except ApiError as exc:
            # 422: it is being deleted (no new finalizers then) or a namesake replaced it.
            raise RequeueAfter(f"cannot hold the Sandbox: {exc.reason}", 1) from None
        run.held = True

    # ----- act on the child: the container ----------------------------------------------

    async def _converge(
        self, run: _Run, template: str, adopt: str | None, failures: int
    ) -> ContainerStatus:
        """One PUT of the container spec (placing the Sandbox again, at most twice, when the
        container turns out to be another's)."""
        sandbox = run.sandbox
        for attempt in range(3):
            wanted = run.writer.wanted
            host = self.index.hosts.get(wanted["host"])
            if host is None:
                await self._tell(run, Problem.host_gone(wanted["host"]))
                raise TerminalError(f"SandboxHost {wanted['host']} no longer exists")
            try:
                return await self._put(run, host, template, adopt)
            except ContainerTaken as exc:
                # Another Sandbox has the container (a warm one another claim adopted first):
                # this one is placed again, the new decision recorded.
                log.warning("%s/%s: %s; placing it again", sandbox.namespace, sandbox.name, exc)
                if attempt == 2:
                    raise RequeueAfter(str(exc), 1) from None
                _, pool = self._pool_of(sandbox)
                decided = await self._place(run, template, pool)
                adopt = decided.pop(ADOPT_IF_MATCH, None)
                run.writer.decide(decided)
            except AgentRejected as exc:
                message = exc.body.message if exc.body else str(exc)
                await self._tell(run, Problem.agent_rejected(message))
                self.events.warning(sandbox.body, Reason.AGENT_REJECTED, str(exc))
                raise TerminalError(str(exc)) from None
            except (AgentUnreachable, AgentUnauthorized, CredentialsMissing) as exc:
                # After a 401 the registry has dropped the host's client: the retry reads the
                # host's Secret again.
                await self._tell(run, Problem.agent_unreachable(str(exc)))
                raise RequeueAfter(str(exc), self.timings.backoff.delay(failures)) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _put(
        self, run: _Run, host: HostRecord, template: str, adopt: str | None
    ) -> ContainerStatus:
        sandbox = run.sandbox
        container = run.writer.wanted["containerName"]
        await self._hold(run)  # placed by an earlier run that stopped before it held one
        agent = await self.agents.client(host)
        if sandbox.spec.restart_policy == "Never" and run.writer.wanted.get("phase") == "Running":
            await self._fail_if_gone(run, agent, container)
        run.spans.mark("prepare")
        wanted = container_spec(sandbox.spec, template, sandbox.uid)
        if sandbox.placed:
            observed = await agent.put(container, wanted)
        else:
            if adopt is None:
                self.launches.creating(sandbox.uid)  # a new container: its creation is timed
            observed = await first_put(agent, container, wanted, sandbox.uid, adopt)
        if observed.state == "running":
            self.launches.created(sandbox.uid, template)
        run.spans.mark("agent")
        return observed

    async def _fail_if_gone(self, run: _Run, agent: AgentClient, container: str) -> None:
        """restartPolicy Never: a container that died or vanished makes the Sandbox Failed."""
        seen = await agent.get(container)
        if seen is not None and seen.state == "running":
            return
        problem = Problem.container_gone(None if seen is None else seen.state)
        await self._tell(run, problem, with_pending=False)
        self.events.warning(run.sandbox.body, problem.reason, problem.status_message or "")
        raise TerminalError(problem.status_message or problem.message)

    async def _tell(self, run: _Run, problem: Problem, with_pending: bool = True) -> None:
        """Write the status that tells `problem` (with the decision still pending, if any).
        A problem that does not settle the Sandbox (an agent unreachable) leaves out the
        decision's observedGeneration: no agent has acted on this generation yet, and a
        status that said so would look settled to the watch (needs_reconcile), which then
        dropped the retry and left the Sandbox Scheduled for good."""
        status = problem_status(run.writer.wanted, problem, run.sandbox.generation, self._at())
        if with_pending and not problem.settles:
            run.writer.pending.pop("observedGeneration", None)
        # Status records the placement (host, container) only with an agent's answer for
        # this Sandbox: a later run takes a Sandbox placed in status for one whose container
        # its agent acknowledged, and PUTs it without a precondition. Written with a problem
        # before any answer (an agent unreachable mid-adoption), it made the next run take
        # over a warm container that another claim had won meanwhile: one container, two
        # Sandboxes (found by make test-slow). Until then the annotation has the decision.
        withhold = () if run.sandbox.placed else PLACEMENT
        await run.writer.write(status, with_pending, withhold)

    def _tell_phase(self, sandbox: Loaded, status: Mapping[str, Any]) -> None:
        message = (
            f"container {status['containerName']} on {status['host']}, cores {status.get('cpuset')}"
        )
        if not sandbox.placed:
            scheduled = find_condition(status.get("conditions"), SCHEDULED)
            message += f"; {scheduled.get('reason')}: {scheduled.get('message')}"
        self.events.normal(sandbox.body, str(status["phase"]), message)


async def first_put(
    agent: AgentClient, container: str, wanted: ContainerSpec, uid: str, etag: str | None
) -> ContainerStatus:
    """The PUT of a Sandbox's container before its status records the placement: it never
    takes over a container that belongs to someone else (a decision read from an annotation
    is not proof of ownership). A claimed warm container is adopted only while it is still
    the warm container that was claimed (If-Match its ETag); any other must be new
    (If-None-Match: *). A 412 for a container labelled for this very Sandbox is the work of an
    earlier run that stopped before status recorded it: go on with it."""
    try:
        if etag:
            return await agent.put(container, wanted, if_match=etag)
        return await agent.put(container, wanted, if_absent=True)
    except AgentRejected as exc:
        if exc.status != 412:
            raise
    seen = await agent.get(container)
    if seen is not None and seen.labels.get(SANDBOX_UID) == uid:
        return await agent.put(container, wanted)
    raise ContainerTaken(
        f"container {container} belongs to another Sandbox"
        if seen is not None
        else f"warm container {container} is gone"
    )


def _ready(status: Mapping[str, Any]) -> bool:
    return find_condition(status.get("conditions"), READY).get("status") == "True"


def _usage_due(status: Mapping[str, Any], every: float, clock: Clock) -> bool:
    observed_at = (status.get("usage") or {}).get("observedAt")
    return seconds_since(observed_at, clock.now()) >= every
