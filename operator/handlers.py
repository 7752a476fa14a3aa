"""kopf handlers: small and flat; the work is in sandboxes.py and hosts.py.

Indexes keep the operator's view of hosts and placements; kopf fills them from the watch
streams before any handler runs, so after a restart the view is whole before it is used.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import kopf

from .admission import (
    ClaimWebhook,
    apply_webhook_configuration,
    remove_webhook_configuration,
    webhook_configuration,
)
from .diffbase import LeanStatusDiffBase
from .geo import Locator
from .hosts import probe_host
from .kube import Kube, NotFound, load_client
from .models import GROUP, VERSION, SandboxPoolSpec
from .pools import PoolState, pool_hash, pool_status, refill_hold, remove_pool, sync_pool
from .runtime import (
    AgentRegistry,
    EventBudget,
    HostRecord,
    PoolInfo,
    Runtime,
    host_record,
    placed_of,
)
from .sandboxes import FINALIZER, admit_claim, finalize_and_release, needs_reconcile, reconcile
from .settings import OperatorSettings

# Read at import: kopf takes timer intervals when the handlers are declared.
_SETTINGS = OperatorSettings()

SANDBOXES = (GROUP, VERSION, "sandboxes")
POOLS = (GROUP, VERSION, "sandboxpools")
HOSTS = (GROUP, VERSION, "sandboxhosts")


@kopf.on.startup()
async def configure(
    settings: kopf.OperatorSettings, memo: Any, logger: kopf.Logger, **_: Any
) -> None:
    """All of kopf's settings in one place, each with why."""
    ours = _SETTINGS
    # kopf's own finalizer, named for us, so `kubectl get -o yaml` says who holds a deletion.
    # kopf puts it only where its daemons and timers run (hosts, pools, sandboxes with a TTL):
    # Sandboxes are held by tuxio.operator.sandboxes.FINALIZER, added with the placement.
    settings.persistence.finalizer = "kopf.tux.io/finalizer"
    # Progress and the last handled spec go to annotations: the CRDs' structural schemas
    # would prune a status.kopf field, which is where kopf keeps them by default.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.tux.io")
    # kopf's diff base (its change detection, for the SandboxPool deletion handler; Sandboxes
    # are level-triggered without one) in the declared status field, built cheaply.
    settings.persistence.diffbase_storage = LeanStatusDiffBase(
        field="status.lastHandledConfiguration"
    )
    # Events are posted by the handlers themselves (kopf.info/warn), not from every log line.
    settings.posting.loggers = False
    # Long-lived watches with a server-side timeout, so a dead connection is noticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.networking.request_timeout = 60
    # Workers per object exit soon after they idle: thousands of sandboxes, few of them busy.
    settings.queueing.idle_timeout = 2.0
    # A timer stopped mid-run (a SandboxHost deleted while its probe is in flight) is looked
    # at again after a second, not kopf's default minute: the host's deletion waits on it.
    settings.background.cancellation_polling = 1.0
    client = load_client()
    kube = Kube(client)
    memo.runtime = Runtime(
        settings=ours,
        kube=kube,
        agents=AgentRegistry(kube, ours.agent_timeout_seconds),
        locator=Locator(ours.geoip_database),
        events=EventBudget(ours.event_rate_per_second, ours.event_burst),
    )
    if ours.claims_at_admission:
        # The claim webhook, and its configuration written by us (see operator/admission.py).
        rt: Runtime = memo.runtime
        memo.webhook = ClaimWebhook(ours, lambda body: _claim_at_admission(rt, body))
        await memo.webhook.start()
        memo.webhook_version = await apply_webhook_configuration(
            kube, webhook_configuration(ours, memo.webhook.ca_pem)
        )
    logger.info("tuxio operator configured: %s", ours.model_dump())


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    await memo.runtime.queue.close()
    await memo.runtime.kube.http.close()
    if memo.get("webhook_version"):
        await remove_webhook_configuration(memo.runtime.kube, memo.webhook_version)
    if memo.get("webhook"):
        await memo.webhook.stop()
    await memo.runtime.agents.close()


# ----- indexes ---------------------------------------------------------------------------
# Every handler here is `async def`, even where it awaits nothing: kopf runs plain functions
# in a thread pool, a hand-off per event, and the indexes' books would be changed from threads.


@kopf.index(*HOSTS)
async def host_index(name: str, body: kopf.Body, **_: Any) -> dict[str, HostRecord]:
    return {name: host_record(name, body)}


@kopf.index(*SANDBOXES)
async def sandbox_index(
    uid: str, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> dict[str, tuple[str, str]]:
    """The one Sandbox index: kopf fills it from the watch before any handler runs, and the
    runtime's book and ledger are kept with it (one call per event instead of one per
    lookup: by host, by container, by UID)."""
    rt: Runtime = memo.runtime
    placed = placed_of(uid, namespace or "", name, body)
    rt.ledger.set(uid, placed)
    rt.book.set(uid, placed)
    return {uid: (namespace or "", name)}


@kopf.index(*POOLS)
async def pool_index(
    uid: str, namespace: str | None, name: str, spec: kopf.Spec, **_: Any
) -> dict[tuple[str, str], PoolInfo]:
    info = PoolInfo(uid, namespace or "", name, SandboxPoolSpec.model_validate(dict(spec)))
    return {(namespace or "", name): info}


@dataclass(frozen=True)
class _Views:
    """The indexes, typed. kopf passes them as keyword arguments named after the index
    functions; its callback protocols do not know them, so handlers take them from **kwargs."""

    hosts: dict[str, HostRecord]
    uids: kopf.Index[str, tuple[str, str]]
    pools: dict[tuple[str, str], PoolInfo]

    @classmethod
    def of(cls, kwargs: dict[str, Any]) -> _Views:
        hosts: kopf.Index[str, HostRecord] = kwargs["host_index"]
        pools: kopf.Index[tuple[str, str], PoolInfo] = kwargs["pool_index"]
        return cls(
            hosts={name: next(iter(store)) for name, store in hosts.items() if store},
            uids=kwargs["sandbox_index"],
            pools={key: next(iter(store)) for key, store in pools.items() if store},
        )

    @staticmethod
    def claimed(rt: Runtime) -> Callable[[str], bool]:
        """Whether a container belongs to a Sandbox (named in a status or an assignment, or
        claimed just now)."""
        return lambda name: rt.book.names_container(name) or name in rt.claims


# ----- Sandbox ---------------------------------------------------------------------------


def _claim_at_admission(rt: Runtime, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The claim of a Sandbox being created, from the views the handlers last saw (the
    webhook is no kopf handler: kopf hands its indexes, live objects, only to handlers)."""
    if rt.views is None:
        return None  # no handler ran yet: the operator claims once the Sandbox is stored
    views: _Views = rt.views()
    return admit_claim(rt, body, views.hosts, views.pools)


@kopf.on.event(*SANDBOXES)
async def sandbox_event(
    type: str | None, body: kopf.Body, uid: str, memo: Any, **kwargs: Any
) -> None:
    """Every watch event of a Sandbox, the initial listing after a start included (type
    None), in one handler. Level-triggered: a Sandbox not placed yet, or whose spec changed
    since its status was written, goes to the work queue, and at a start every one does (the
    resume); the queue reconciles the newest body, once at a time per Sandbox, and retries.
    A Sandbox being deleted gets a task that destroys its container and lets it go: kopf runs
    on.delete handlers only under its own finalizer, and a Sandbox is held by ours."""
    rt: Runtime = memo.runtime
    rt.views = lambda: _Views.of(kwargs)
    if type == "DELETED":
        # kopf drops a deleted object from its indexes without calling them: so do we.
        rt.ledger.discard(uid)
        rt.book.discard(uid)
        rt.queue.forget(uid)
        rt.settled.pop(uid, None)
        return
    meta = body.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        rt.queue.forget(uid)
        if FINALIZER in (meta.get("finalizers") or []) and uid not in rt.finalizing:
            task = asyncio.create_task(
                finalize_and_release(rt, dict(body), lambda: _Views.of(kwargs).hosts),
                name=f"finalize {uid}",
            )
            rt.finalizing[uid] = task
            task.add_done_callback(lambda done: _finalized(rt, uid, done))
        return
    if type is not None and not needs_reconcile(body):
        # The newest state is settled: work queued for an older one is obsolete.
        rt.queue.drop(uid)
        return
    snapshot = dict(body)
    generation = int(meta.get("generation") or 0)

    async def work(failures: int) -> None:
        if rt.settled.get(uid) == generation:
            # Queued behind the reconciliation that settled this generation, with a body
            # from before it: the watch has yet to deliver what that one wrote.
            return
        views = _Views.of(kwargs)
        await reconcile(rt, snapshot, views.hosts, views.pools, failures)

    rt.queue.add(uid, work)


def _finalized(rt: Runtime, uid: str, task: asyncio.Task[None]) -> None:
    rt.finalizing.pop(uid, None)


@kopf.daemon(
    *SANDBOXES,
    when=lambda spec, **_: bool((spec.get("lifetime") or {}).get("ttlSeconds")),
    cancellation_timeout=5,
)
async def sandbox_expiry(
    stopped: kopf.DaemonStopped,
    meta: kopf.Meta,
    spec: kopf.Spec,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Delete the sandbox when its lifetime is over (one sleeping coroutine per sandbox)."""
    created = datetime.fromisoformat(str(meta["creationTimestamp"]).replace("Z", "+00:00"))
    due = created.timestamp() + int(spec["lifetime"]["ttlSeconds"])
    while not stopped:
        left = due - datetime.now(UTC).timestamp()
        if left <= 0:
            logger.info("lifetime over: deleting")
            with contextlib.suppress(NotFound):
                await memo.runtime.kube.delete_sandbox(meta["namespace"], meta["name"], meta["uid"])
            return
        await stopped.wait(min(left, 60.0))


# ----- SandboxHost -----------------------------------------------------------------------


@kopf.timer(*HOSTS, interval=_SETTINGS.probe_interval_seconds, initial_delay=0)
async def host_probe(
    name: str,
    body: kopf.Body,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: Any,
    **kwargs: Any,
) -> None:
    rt: Runtime = memo.runtime
    rt.views = lambda: _Views.of(kwargs)
    views = _Views.of(kwargs)
    placed = rt.book.on_host(name)

    async def reconcile_one(namespace: str, sandbox: str) -> None:
        try:
            fresh = await rt.kube.get_sandbox(namespace, sandbox)
        except NotFound:
            return
        if fresh["metadata"].get("deletionTimestamp"):
            return
        current = _Views.of(kwargs)
        await reconcile(rt, fresh, current.hosts, current.pools)

    new = await probe_host(
        rt,
        host_record(name, body),
        dict(status),
        placed,
        lambda uid: uid in views.uids,
        lambda uid: any(p.uid == uid for p in views.pools.values()),
        views.claimed(rt),
        reconcile_one,
    )
    for key, value in new.items():
        if status.get(key) != value:
            patch.status[key] = value


# ----- SandboxPool -----------------------------------------------------------------------


@kopf.daemon(*POOLS, cancellation_timeout=10)
async def pool_filler(
    stopped: kopf.DaemonStopped,
    uid: str,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """Keep the pool's warm containers: one loop per pool, woken by claims and spec changes."""
    rt: Runtime = memo.runtime
    rt.views = lambda: _Views.of(kwargs)
    state: PoolState = rt.pools.setdefault(uid, PoolState(uid, namespace or "", name))
    last_refresh = last_write = 0.0
    status: dict[str, Any] = dict(body.get("status") or {})
    blocker: str | None = None

    async def write_status(spec: SandboxPoolSpec, views: _Views) -> None:
        nonlocal last_write
        new = pool_status(
            status,
            state,
            spec,
            pool_hash(spec),
            int(body["metadata"].get("generation") or 0),
            blocker,
            {h.name for h in views.hosts.values() if h.view.ready},
        )
        changes = {k: v for k, v in new.items() if status.get(k) != v}
        # Counts that grow are written at most every pool_status_interval_seconds (they change
        # with every refill); the Ready condition, the generation and a drop in readyReplicas
        # (a claim took a warm container) at once: the status never tells of more ready warm
        # containers than the agents hold.
        urgent = bool(changes.keys() - {"replicas", "readyReplicas"}) or int(
            new["readyReplicas"]
        ) < int(status.get("readyReplicas") or 0)
        due_write = time.monotonic() - last_write >= rt.settings.pool_status_interval_seconds
        if changes and (urgent or due_write):
            last_write = time.monotonic()
            logger.info("status: %s", {k: v for k, v in changes.items() if k != "conditions"})
            with contextlib.suppress(NotFound):
                await rt.kube.patch_pool_status(namespace or "", name, changes)
            status.update(changes)

    while not stopped:
        spec = SandboxPoolSpec.model_validate(dict(body["spec"]))
        # What a claim took shows in status before the refill waits.
        await write_status(spec, _Views.of(kwargs))
        # Claims come first: the refill waits while claims keep coming (on a small host a
        # container start takes the CPU of several claims), unless the pool runs low.
        while not stopped:
            hold = refill_hold(
                time.monotonic(),
                state.last_take,
                rt.settings.pool_refill_delay_seconds,
                sum(1 for w in state.warm.values() if w.ready),
                spec.replicas,
                rt.settings.pool_refill_floor,
            )
            if hold <= 0:
                break
            # Woken early by another claim, whose take shows in status at once too.
            state.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(state.wake.wait(), timeout=hold)
            await write_status(spec, _Views.of(kwargs))
        views = _Views.of(kwargs)
        due = time.monotonic() - last_refresh >= rt.settings.pool_refresh_seconds
        if due:
            last_refresh = time.monotonic()
        state.wake.clear()
        blocker = await sync_pool(
            rt,
            state,
            spec,
            views.hosts,
            rt.allocations(),
            views.claimed(rt),
            refresh_inventory=due,
        )
        await write_status(spec, views)
        # Woken by a claim, a creation that ended or a spec change; else in time to write
        # counts that were held back and to notice hosts that changed.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                state.wake.wait(), timeout=min(1.0, rt.settings.pool_status_interval_seconds)
            )


@kopf.on.delete(*POOLS)
async def pool_deleted(uid: str, memo: Any, **kwargs: Any) -> None:
    """Destroy the unclaimed warm containers; adopted ones belong to their Sandboxes now."""
    rt: Runtime = memo.runtime
    views = _Views.of(kwargs)
    state = rt.pools.pop(uid, None)
    if state is not None:
        await remove_pool(rt, state, views.hosts, views.claimed(rt))
