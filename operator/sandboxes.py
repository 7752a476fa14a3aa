"""Sandbox reconciliation: one function, the same order every time.

load -> (place if it has no host: record the decision first) -> tell the agent (one idempotent
PUT) -> compute status with pure functions -> write status only if it changed. Every step can
be interrupted: the decision lives in the API, the PUT is idempotent, so running it again after
a crash converges to the same single container.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from tuxio.nodeagent.models import ContainerSpec, ContainerStatus
from tuxio.nodeagent.models import NetworkSpec as AgentNetwork
from tuxio.operator.agentclient import AgentClient, AgentRejected, AgentUnreachable

from .conditions import READY, SCHEDULED, Reason, condition, now, set_condition
from .geo import GeoPoint, Unlocated
from .kube import NotFound
from .models import SandboxSpec, bytes_of
from .pools import MANAGED_BY, OPERATOR, Warm, limits_of
from .runtime import (
    ASSIGNMENT,
    FINALIZER,
    CredentialsMissing,
    HostRecord,
    PoolInfo,
    Runtime,
    assignment_of,
)
from .scheduling import Allocation, Request, Unschedulable, choose_host, explain, rank_hosts

__all__ = [
    "FINALIZER",
    "SANDBOX_UID",
    "container_name",
    "container_spec",
    "event_target",
    "finalize",
    "finalize_and_release",
    "host_lost",
    "needs_reconcile",
    "notice",
    "observed_status",
    "reconcile",
    "status_changes",
]

log = logging.getLogger(__name__)

SANDBOX_UID = "tux.io/sandbox-uid"


def event_target(body: Mapping[str, Any]) -> kopf.Body:
    """The object an Event is about (kopf reads only its apiVersion, kind and metadata)."""
    return cast(kopf.Body, body)


def notice(rt: Runtime, body: Mapping[str, Any], reason: str, message: str) -> None:
    """A routine (Normal) Event, within the operator's event budget; logged either way."""
    meta = body.get("metadata") or {}
    log.info("%s/%s: %s: %s", meta.get("namespace"), meta.get("name"), reason, message)
    if rt.events.take():
        kopf.info(event_target(body), reason=reason, message=message)


def container_name(uid: str) -> str:
    """The container of a cold-created sandbox: unique across namespaces, a DNS label."""
    return f"sbx-{uid}"


def container_spec(spec: SandboxSpec, template: str, uid: str) -> ContainerSpec:
    """What the agent is asked for."""
    resources = spec.resources
    return ContainerSpec(
        template=template,
        state="running" if spec.state == "Running" else "stopped",
        limits=limits_of(resources),
        labels={SANDBOX_UID: uid, MANAGED_BY: OPERATOR},
        network=AgentNetwork(mode=spec.network.mode, bridge=spec.network.bridge),
    )


def expires_at(creation: str, spec: SandboxSpec) -> str | None:
    if not spec.lifetime.ttl_seconds:
        return None
    created = datetime.fromisoformat(creation.replace("Z", "+00:00"))
    return (created + timedelta(seconds=spec.lifetime.ttl_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def observed_status(
    current: Mapping[str, Any],
    observed: ContainerStatus,
    spec: SandboxSpec,
    generation: int,
    usage_due: bool,
) -> dict[str, Any]:
    """The status a sandbox should have, given what its agent observed. Pure."""
    running = observed.state == "running"
    new: dict[str, Any] = {
        "phase": "Running" if running else "Stopped",
        "cpuset": observed.limits.cpuset if observed.limits else None,
        "startedAt": observed.started_at.strftime("%Y-%m-%dT%H:%M:%SZ")
        if observed.started_at
        else None,
        "observedGeneration": generation,
        "message": "; ".join(observed.warnings) or None,
    }
    if running:
        ready = condition(
            READY, True, Reason.RUNNING, "the container runs with its limits in force", generation
        )
    else:
        ready = condition(READY, False, Reason.STOPPED, "spec.state is Stopped", generation)
    new["conditions"] = set_condition(list(current.get("conditions") or []), ready)
    if observed.usage and (usage_due or not current.get("usage")):
        new["usage"] = {
            "cpuSeconds": observed.usage.cpu_seconds,
            "memoryBytes": observed.usage.memory_bytes,
            "pids": observed.usage.pids,
            "observedAt": now(),
        }
    return new


def needs_reconcile(body: Mapping[str, Any]) -> bool:
    """Whether a watch event calls for a reconciliation (level-triggered, as kubebuilder's
    controllers decide): a Sandbox not placed yet, or whose spec changed since its status was
    written. Pure."""
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return False
    status = body.get("status") or {}
    if not status.get("host"):
        return True
    return bool(status.get("observedGeneration") != meta.get("generation"))


def status_changes(current: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of `new` that differ from `current` (a merge patch; None deletes)."""
    return {k: v for k, v in new.items() if current.get(k) != v}


def host_lost(record: HostRecord, lost_after: float, not_ready_after: float) -> bool:
    """A host that has not answered for longer than both grace periods."""
    if record.view.ready:
        return False
    since = record.heartbeat or record.not_ready_since
    if since is None:
        return True
    last = datetime.fromisoformat(since.replace("Z", "+00:00"))
    return (datetime.now(UTC) - last).total_seconds() > not_ready_after + lost_after


def _backoff(rt: Runtime, retry: int) -> float:
    return float(min(30.0, rt.settings.retry_delay_seconds * 2 ** min(retry, 5)))


async def _write(
    rt: Runtime,
    namespace: str,
    name: str,
    current: dict[str, Any],
    new: dict[str, Any],
    unwritten: set[str] | None = None,
) -> None:
    """Write the fields of `new` that differ from `current`, and the `unwritten` ones (known
    in `current` but not yet in the API's status)."""
    changes = status_changes(current, new)
    for key in unwritten or ():
        if key not in changes and key in current:
            changes[key] = current[key]
    if changes:
        await rt.kube.patch_sandbox_status(namespace, name, changes)
        current.update(changes)
        if unwritten:
            unwritten.clear()


def _pool_of(
    pools: Mapping[tuple[str, str], PoolInfo], namespace: str, spec: SandboxSpec
) -> tuple[str, PoolInfo | None]:
    """The template to clone and, for a poolRef, the pool."""
    if spec.template:
        return spec.template, None
    assert spec.pool_ref is not None
    pool = pools.get((namespace, spec.pool_ref.name))
    if pool is None:
        raise kopf.TemporaryError(f"SandboxPool {spec.pool_ref.name} does not exist", delay=2)
    return pool.spec.template, pool


# In the assignment annotation of a claim (never in status): the ETag the warm container had
# when it was taken. The first PUT adopts it only while it still has that (If-Match).
ADOPT_IF_MATCH = "adoptIfMatch"


class ContainerTaken(Exception):
    """The container a placement names belongs to another Sandbox (a warm container another
    claim won), or a claimed one is gone: place again."""


def _request(rt: Runtime, spec: SandboxSpec, template: str) -> tuple[Request, str]:
    """What a placement asks for, and why it cannot use the client's location (if so)."""
    located = rt.locator.locate(spec.placement.client_ip) if spec.placement.client_ip else None
    request = Request(
        template=template,
        cpus=spec.resources.cpus,
        memory_bytes=bytes_of(spec.resources.memory),
        regions=frozenset([spec.placement.region]) if spec.placement.region else frozenset(),
        host_selector=spec.placement.host_selector or {},
        client=located if isinstance(located, GeoPoint) else None,
    )
    # An address GeoIP cannot place is no error: the decision falls back, and says why.
    return request, (f"; {located.reason}" if isinstance(located, Unlocated) else "")


def _take_warm(
    rt: Runtime,
    pool: PoolInfo,
    template: str,
    hosts: Mapping[str, HostRecord],
    allocations: Mapping[str, Allocation],
    request: Request,
) -> Warm | None:
    """Take a warm container of the pool, on the best host that has one. Synchronous: no
    other claim in this process can take the same container."""
    state = rt.pools.get(pool.uid)
    if state is None or not state.loaded.is_set():
        return None
    # The warm container already holds its room on its host: rank without adding it again.
    ranked = rank_hosts(
        (h.view for h in hosts.values()),
        allocations,
        replace(request, memory_bytes=0),
        scorer=rt.scorer,
        memory_overcommit=rt.settings.memory_overcommit,
    )
    warm: Warm | None = state.take(template, ranked)
    return warm


def _decision(
    *,
    host: str,
    container: str,
    template: str,
    pool: PoolInfo | None,
    warm: Warm | None,
    scheduled: dict[str, Any],
    placement: dict[str, Any],
    request: Request,
    expires: str | None,
    generation: int,
    conditions: list[dict[str, Any]],
) -> dict[str, Any]:
    """The recorded placement: the status fields it sets, plus the ETag of an adoption."""
    if request.client is not None:
        placement["clientLocation"] = request.client.label
    decided: dict[str, Any] = {
        "phase": "Scheduled",
        "host": host,
        "containerName": container,
        "template": template,
        "fromPool": pool.name if warm is not None and pool else None,
        "placement": placement,
        "expiresAt": expires,
        "observedGeneration": generation,
        "conditions": set_condition(
            set_condition(conditions, scheduled),
            condition(
                READY, False, Reason.CREATING, f"preparing the container on {host}", generation
            ),
        ),
    }
    if warm is not None:
        decided[ADOPT_IF_MATCH] = warm.etag
    return decided


def _claim_decision(
    rt: Runtime,
    pool: PoolInfo,
    warm: Warm,
    hosts: Mapping[str, HostRecord],
    request: Request,
    fallback: str,
    expires: str | None,
    generation: int,
    conditions: list[dict[str, Any]],
) -> dict[str, Any]:
    kind, km, why = explain(hosts[warm.host].view, request)
    scheduled = condition(
        SCHEDULED,
        True,
        Reason.CLAIMED,
        f"adopted warm container {warm.name} of pool {pool.name} ({why}{fallback})",
        generation,
    )
    return _decision(
        host=warm.host,
        container=warm.name,
        template=warm.template,
        pool=pool,
        warm=warm,
        scheduled=scheduled,
        placement={"reason": kind, "distanceKm": km, "message": why + fallback},
        request=request,
        expires=expires,
        generation=generation,
        conditions=conditions,
    )


def admit_claim(
    rt: Runtime,
    body: Mapping[str, Any],
    hosts: Mapping[str, HostRecord],
    pools: Mapping[tuple[str, str], PoolInfo],
) -> dict[str, Any] | None:
    """The claim of a Sandbox being created, for a mutating admission webhook: a warm
    container taken from its pool, as the assignment to store with the new Sandbox, in the
    very write that creates it. None when there is nothing to claim (no poolRef, no such
    pool, its inventory not read yet, no ready warm container) or the spec is invalid (the
    API server refuses it next, with its own message): the operator places the Sandbox once
    it is stored, as it places any other."""
    meta = body.get("metadata") or {}
    try:
        spec = SandboxSpec.model_validate(body.get("spec") or {})
    except ValueError:
        return None
    if spec.pool_ref is None:
        return None
    pool = pools.get((meta.get("namespace") or "", spec.pool_ref.name))
    if pool is None:
        return None
    request, fallback = _request(rt, spec, pool.spec.template)
    warm = _take_warm(rt, pool, pool.spec.template, hosts, rt.allocations(), request)
    if warm is None:
        return None
    # Not stored yet, maybe never: held until the Sandbox shows up, or for a while.
    rt.claims.add(warm.name, ttl=rt.settings.admission_claim_seconds)
    log.debug("claim at admission: %s of pool %s/%s", warm.name, pool.namespace, pool.name)
    return _claim_decision(rt, pool, warm, hosts, request, fallback, None, 1, [])


async def _place(
    rt: Runtime,
    body: Mapping[str, Any],
    spec: SandboxSpec,
    status: dict[str, Any],
    template: str,
    pool: PoolInfo | None,
    hosts: Mapping[str, HostRecord],
    meta: dict[str, Any],
) -> dict[str, Any]:
    """Choose the container's host (adopting a warm container when the pool has one) and
    write the decision to the API, before the agent hears of it: after a crash the next run
    finds it there and neither places the sandbox twice nor hands the container to another.
    Returns the decision (its status fields are written with the next status write)."""
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    generation = int(meta.get("generation") or 0)
    request, fallback = _request(rt, spec, template)
    allocations = rt.allocations()
    expires = expires_at(meta["creationTimestamp"], spec)
    conditions = list(status.get("conditions") or [])
    warm = None
    if pool is not None:
        state = rt.pools.get(pool.uid)
        if state is not None and not state.loaded.is_set():
            # Just started: the inventory is being read from the agents.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.loaded.wait(), 5)
        warm = _take_warm(rt, pool, template, hosts, allocations, request)
    if pool is not None and warm is not None:
        rt.claims.add(warm.name)
        decided = _claim_decision(
            rt, pool, warm, hosts, request, fallback, expires, generation, conditions
        )
    else:
        decision = choose_host(
            (h.view for h in hosts.values()),
            allocations,
            request,
            scorer=rt.scorer,
            memory_overcommit=rt.settings.memory_overcommit,
        )
        if isinstance(decision, Unschedulable):
            await _write(
                rt,
                namespace,
                name,
                status,
                {
                    "phase": "Pending",
                    "observedGeneration": generation,
                    "conditions": set_condition(
                        conditions,
                        condition(
                            SCHEDULED, False, Reason.UNSCHEDULABLE, decision.message, generation
                        ),
                    ),
                },
            )
            raise kopf.TemporaryError(
                decision.message, delay=rt.settings.unschedulable_retry_seconds
            )
        reason = Reason.POOL_EMPTY if pool else Reason.HOST_CHOSEN
        why = decision.reason + fallback
        placement = {"reason": decision.kind, "distanceKm": decision.distance_km, "message": why}
        if pool:
            why = f"pool {pool.name} had no warm container: created cold; {why}"
        decided = _decision(
            host=decision.host,
            container=container_name(uid),
            template=template,
            pool=pool,
            warm=None,
            scheduled=condition(SCHEDULED, True, reason, why, generation),
            placement=placement,
            request=request,
            expires=expires,
            generation=generation,
            conditions=conditions,
        )
        rt.assumed.assume(uid, decision.host, request.memory_bytes, request.cpus)
    # One write, to metadata: the decision and the finalizer together (a status write and a
    # metadata write to one object would contend in the API server). Status follows with the
    # agent's answer; until then placed_of and assignment_of read the decision from here.
    await _hold(rt, meta, {ASSIGNMENT: json.dumps(decided, sort_keys=True)})
    # No Event here: the decision is told in the Event of the phase it leads to (one Event
    # per new Sandbox, not two: each is an API write) and is in the Scheduled condition.
    return decided


async def _first_put(
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


async def reconcile(
    rt: Runtime,
    body: Mapping[str, Any],
    hosts: Mapping[str, HostRecord],
    pools: Mapping[tuple[str, str], PoolInfo],
    retry: int = 0,
) -> None:
    """Converge one Sandbox: place it if needed, then PUT its container and write status
    (one status write: the decision's fields, if new, together with the agent's answer)."""
    clock = _Clock()
    meta = dict(body["metadata"])  # a copy: _hold notes the finalizer it adds
    namespace, name, uid = meta["namespace"], meta["name"], meta["uid"]
    generation = int(meta.get("generation") or 0)
    spec = SandboxSpec.model_validate(body.get("spec") or {})
    status: dict[str, Any] = dict(body.get("status") or {})

    async with rt.locks.hold(uid):
        recorded = assignment_of(body)
        try:
            # Once placed, the template is the recorded one: a claimed Sandbox outlives its pool.
            template, pool = (
                (str(recorded["template"]), None)
                if recorded.get("template")
                else _pool_of(pools, namespace, spec)
            )
        except kopf.TemporaryError as exc:
            await _write(
                rt,
                namespace,
                name,
                status,
                {
                    "phase": "Pending",
                    "conditions": set_condition(
                        list(status.get("conditions") or []),
                        condition(SCHEDULED, False, Reason.POOL_MISSING, str(exc), generation),
                    ),
                },
            )
            raise

        # A Sandbox without a host in status is being placed: by the decision stored with it
        # (a claim made at admission, or the record of an earlier run that stopped after
        # writing it), else by a decision made and recorded now.
        placed_now = not status.get("host")
        adopt: str | None = None
        unwritten: set[str] = set()
        if placed_now:
            decided = dict(recorded)
            if not decided:
                decided = await _place(rt, body, spec, status, template, pool, hosts, meta)
                clock.mark("decision")
            adopt = decided.pop(ADOPT_IF_MATCH, None)
            decided["expiresAt"] = expires_at(meta["creationTimestamp"], spec)
            status.update(decided)
            unwritten = set(decided)

        for attempt in range(3):
            host = hosts.get(status["host"])
            if host is None:
                await _write(
                    rt,
                    namespace,
                    name,
                    status,
                    {
                        "phase": "Lost",
                        "observedGeneration": generation,
                        "conditions": set_condition(
                            list(status.get("conditions") or []),
                            condition(
                                READY,
                                False,
                                Reason.HOST_GONE,
                                f"SandboxHost {status['host']} no longer exists",
                                generation,
                            ),
                        ),
                    },
                    unwritten,
                )
                raise kopf.PermanentError(f"SandboxHost {status['host']} no longer exists")

            container = status["containerName"]
            await _hold(rt, meta)  # placed by an earlier run that stopped before it held one
            try:
                agent = await rt.agents.client(host)
                if spec.restart_policy == "Never" and status.get("phase") == "Running":
                    await _fail_if_gone(
                        rt,
                        agent_get=agent.get,
                        container=container,
                        namespace=namespace,
                        name=name,
                        body=body,
                        status=status,
                        generation=generation,
                    )
                clock.mark("prepare")
                wanted = container_spec(spec, template, uid)
                observed = await (
                    _first_put(agent, container, wanted, uid, adopt)
                    if placed_now
                    else agent.put(container, wanted)
                )
                clock.mark("agent")
                break
            except ContainerTaken as exc:
                # Another Sandbox has the container (two claims of a warm one can only come
                # from two operator runs): this one is placed again, the new decision recorded.
                log.warning("%s/%s: %s; placing it again", namespace, name, exc)
                if attempt == 2:
                    raise kopf.TemporaryError(str(exc), delay=1) from None
                _, pool = _pool_of(pools, namespace, spec)
                decided = await _place(rt, body, spec, status, template, pool, hosts, meta)
                adopt = decided.pop(ADOPT_IF_MATCH, None)
                status.update(decided)
                unwritten |= set(decided)
            except AgentRejected as exc:
                await _write(
                    rt,
                    namespace,
                    name,
                    status,
                    {
                        "phase": "Failed",
                        "observedGeneration": generation,
                        "message": exc.body.message if exc.body else str(exc),
                        "conditions": set_condition(
                            list(status.get("conditions") or []),
                            condition(
                                READY,
                                False,
                                Reason.AGENT_REJECTED,
                                exc.body.message if exc.body else str(exc),
                                generation,
                            ),
                        ),
                    },
                    unwritten,
                )
                kopf.warn(event_target(body), reason="AgentRejected", message=str(exc))
                raise kopf.PermanentError(str(exc)) from None
            except (AgentUnreachable, CredentialsMissing) as exc:
                if isinstance(exc, AgentUnreachable) and exc.status == 401:
                    await rt.agents.forget(host.name)
                await _write(
                    rt,
                    namespace,
                    name,
                    status,
                    {
                        "conditions": set_condition(
                            list(status.get("conditions") or []),
                            condition(READY, False, Reason.AGENT_UNREACHABLE, str(exc), generation),
                        ),
                    },
                    unwritten,
                )
                raise kopf.TemporaryError(str(exc), delay=_backoff(rt, retry)) from None

        was = status.get("phase")
        usage_due = _usage_due(status, rt.settings.usage_write_seconds)
        await _write(
            rt,
            namespace,
            name,
            status,
            observed_status(status, observed, spec, generation, usage_due),
            unwritten,
        )
        clock.mark("status")
        rt.settled[uid] = generation
        log.info("timing %s/%s started=%.6f %s", namespace, name, clock.started, clock.report())
        if status.get("phase") != was:
            message = f"container {container} on {status['host']}, cores {status.get('cpuset')}"
            if placed_now:
                scheduled: dict[str, Any] = next(
                    (c for c in status.get("conditions") or [] if c.get("type") == SCHEDULED), {}
                )
                message += f"; {scheduled.get('reason')}: {scheduled.get('message')}"
            notice(rt, body, str(status["phase"]), message)


class _Clock:
    """Where a reconciliation spends its time, logged for benchmarks and slow-path hunting."""

    def __init__(self) -> None:
        self.started = time.time()
        self._last = time.perf_counter()
        self.spans: dict[str, float] = {}

    def mark(self, span: str) -> None:
        now_ = time.perf_counter()
        self.spans[span] = self.spans.get(span, 0.0) + (now_ - self._last) * 1000
        self._last = now_

    def report(self) -> str:
        return " ".join(f"{k}={v:.1f}ms" for k, v in self.spans.items())


async def _fail_if_gone(
    rt: Runtime,
    *,
    agent_get: Any,
    container: str,
    namespace: str,
    name: str,
    body: Mapping[str, Any],
    status: dict[str, Any],
    generation: int,
) -> None:
    """restartPolicy Never: a container that died or vanished makes the Sandbox Failed."""
    seen = await agent_get(container)
    if seen is not None and seen.state == "running":
        return
    reason = Reason.CONTAINER_VANISHED if seen is None else Reason.CONTAINER_DIED
    message = (
        "the container is gone from its host" if seen is None else f"the container is {seen.state}"
    )
    await _write(
        rt,
        namespace,
        name,
        status,
        {
            "phase": "Failed",
            "observedGeneration": generation,
            "message": message,
            "conditions": set_condition(
                list(status.get("conditions") or []),
                condition(
                    READY, False, reason, f"{message} and restartPolicy is Never", generation
                ),
            ),
        },
    )
    kopf.warn(event_target(body), reason=reason, message=message)
    raise kopf.PermanentError(message)


async def _hold(
    rt: Runtime, meta: dict[str, Any], annotations: dict[str, str] | None = None
) -> None:
    """Put FINALIZER on the Sandbox, with `annotations`, in one write; nothing to do when it
    holds FINALIZER already and there are no annotations (`meta` is updated to say so)."""
    finalizers = list(meta.get("finalizers") or [])
    if FINALIZER in finalizers and not annotations:
        return
    try:
        await rt.kube.hold_sandbox(meta["namespace"], meta["name"], meta, FINALIZER, annotations)
    except NotFound:
        raise kopf.TemporaryError("the Sandbox is gone", delay=1) from None
    except ApiException as exc:
        # 422: it is being deleted (no new finalizers then) or a namesake replaced it.
        raise kopf.TemporaryError(f"cannot hold the Sandbox: {exc.reason}", delay=1) from None
    if FINALIZER not in finalizers:
        meta["finalizers"] = [*finalizers, FINALIZER]


def _usage_due(status: Mapping[str, Any], every: float) -> bool:
    usage = status.get("usage") or {}
    if not usage.get("observedAt"):
        return True
    seen = datetime.fromisoformat(str(usage["observedAt"]).replace("Z", "+00:00"))
    return (datetime.now(UTC) - seen).total_seconds() >= every


async def finalize(
    rt: Runtime, body: Mapping[str, Any], hosts: Mapping[str, HostRecord], retry: int = 0
) -> None:
    """Deletion: destroy the container, unless its host is gone for good."""
    meta, status = body["metadata"], assignment_of(body)
    rt.assumed.forget(meta["uid"])
    host_name, container = status.get("host"), status.get("containerName")
    if not host_name or not container:
        return
    host = hosts.get(host_name)
    if host is None:
        notice(rt, body, "HostGone", f"SandboxHost {host_name} is gone; nothing to destroy")
        return
    if host_lost(host, rt.settings.lost_after_seconds, rt.settings.not_ready_after_seconds):
        kopf.warn(
            event_target(body),
            reason="HostLost",
            message=f"{host_name} is lost; its container is left to the orphan sweep",
        )
        return
    try:
        agent = await rt.agents.client(host)
        await agent.delete(container)
    except (AgentUnreachable, CredentialsMissing) as exc:
        raise kopf.TemporaryError(
            f"cannot reach {host_name} to destroy {container}: {exc}", delay=_backoff(rt, retry)
        ) from None
    except AgentRejected as exc:
        kopf.warn(event_target(body), reason="AgentRejected", message=str(exc))
        return
    notice(rt, body, "Deleted", f"container {container} destroyed on {host_name}")


async def finalize_and_release(
    rt: Runtime, body: Mapping[str, Any], hosts: Callable[[], Mapping[str, HostRecord]]
) -> None:
    """Destroy a deleted Sandbox's container, retrying with backoff until that is done or no
    longer possible, then drop FINALIZER so the API server lets the Sandbox go."""
    meta = body["metadata"]
    retry = 0
    while True:
        try:
            await finalize(rt, body, hosts(), retry)
            await rt.kube.remove_sandbox_finalizer(
                meta["namespace"], meta["name"], meta["uid"], FINALIZER
            )
            return
        except kopf.TemporaryError as exc:
            delay = exc.delay if exc.delay is not None else _backoff(rt, retry)
            log.warning("%s/%s: %s; again in %.1fs", meta["namespace"], meta["name"], exc, delay)
        except Exception as exc:
            delay = _backoff(rt, retry)
            log.warning(
                "%s/%s: finalizing failed: %r; again in %.1fs",
                meta["namespace"],
                meta["name"],
                exc,
                delay,
            )
        await asyncio.sleep(delay)
        retry += 1
