"""kopf handlers: small and flat; the work is in the reconcilers they call.

Every handler is `async def`, even where it awaits nothing: kopf runs plain functions in a
thread pool, a hand-off per event, and the index would be changed from threads. The index
handlers feed tuxio.operator.index (kopf runs them for every event, the initial listing
included, before any other handler); reconcilers' errors become kopf's only here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from importlib.metadata import version
from typing import Any

import kopf
from prometheus_client import REGISTRY

from tuxio.common.metrics import register_build_info, serve_metrics
from tuxio.common.timeutil import parse_time

from .admission import (
    ClaimWebhook,
    apply_webhook_configuration,
    remove_webhook_configuration,
    webhook_configuration,
)
from .controllers import Controllers
from .diffbase import LeanStatusDiffBase
from .errors import RequeueAfter, TerminalError
from .kube import Kube, NotFound, load_client
from .labels import FINALIZER, KOPF_FINALIZER
from .metrics import reconciliation
from .models import GROUP, VERSION, SandboxSpec
from .pool_metrics import PoolCollector
from .pool_models import SandboxPoolSpec
from .records import PoolInfo, assignment_of, host_record, placed_of
from .sandbox_status import expires_at, needs_reconcile
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
    """All of kopf's settings in one place, each with why; then the operator's parts."""
    # kopf's own finalizer, named for us, so `kubectl get -o yaml` says who holds a deletion.
    # kopf puts it only where its daemons and timers run (hosts, pools, sandboxes with a TTL):
    # Sandboxes are held by tuxio.operator.labels.FINALIZER, added with the placement.
    settings.persistence.finalizer = KOPF_FINALIZER
    # Progress and the last handled spec go to annotations: the CRDs' structural schemas
    # would prune a status.kopf field, which is where kopf keeps them by default.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="kopf.tux.io")
    # kopf's diff base (its change detection, for the SandboxPool deletion handler; Sandboxes
    # are level-triggered without one) in the declared status field, built cheaply.
    settings.persistence.diffbase_storage = LeanStatusDiffBase(
        field="status.lastHandledConfiguration"
    )
    # Events are posted by the reconcilers themselves (tuxio.operator.events), not from logs.
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
    ours = _SETTINGS
    controllers = Controllers.build(ours, Kube(load_client()))
    memo.controllers = controllers
    if ours.claims_at_admission:
        # The claim webhook, and its configuration written by us (see operator/admission.py).
        memo.webhook = ClaimWebhook(ours, controllers.claim_at_admission)
        await memo.webhook.start()
        memo.webhook_version = await apply_webhook_configuration(
            controllers.kube, webhook_configuration(ours, memo.webhook.ca_pem)
        )
    if ours.metrics_port:
        # Prometheus' endpoint, a listener of its own (tuxio.common.metrics).
        register_build_info("operator", version("tuxio"))
        pools = PoolCollector(controllers.index, controllers.inventories)
        REGISTRY.register(pools)
        metrics = serve_metrics(ours.metrics_listen, ours.metrics_port)
        try:
            await metrics.start()
        except BaseException:
            REGISTRY.unregister(pools)  # kopf retries this handler: register afresh then
            raise
        memo.metrics, memo.pool_collector = metrics, pools
    logger.info("tuxio operator configured: %s", ours.model_dump())


@kopf.on.cleanup()
async def close(memo: Any, **_: Any) -> None:
    controllers: Controllers = memo.controllers
    if memo.get("webhook_version"):
        await remove_webhook_configuration(controllers.kube, memo.webhook_version)
    if memo.get("webhook"):
        await memo.webhook.stop()
    if memo.get("metrics"):
        await memo.metrics.stop()
        REGISTRY.unregister(memo.pool_collector)
    await controllers.close()


# ----- the index --------------------------------------------------------------------------


@kopf.index(*HOSTS)
async def host_index(name: str, body: kopf.Body, memo: Any, **_: Any) -> dict[str, None]:
    memo.controllers.index.set_host(host_record(name, body))
    return {name: None}


@kopf.index(*POOLS)
async def pool_index(
    uid: str, namespace: str | None, name: str, spec: kopf.Spec, memo: Any, **_: Any
) -> dict[str, None]:
    pool = PoolInfo(uid, namespace or "", name, SandboxPoolSpec.model_validate(dict(spec)))
    memo.controllers.index.set_pool(pool)
    return {uid: None}


@kopf.index(*SANDBOXES)
async def sandbox_index(
    uid: str, namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any
) -> dict[str, None]:
    placed = placed_of(uid, namespace or "", name, body)
    memo.controllers.index.set_sandbox(uid, namespace or "", name, placed)
    return {uid: None}


# kopf drops a deleted object from its indexes without calling them: so does the index.
@kopf.on.event(*HOSTS)
async def host_event(type: str | None, name: str, memo: Any, **_: Any) -> None:
    if type == "DELETED":
        memo.controllers.index.discard_host(name)


@kopf.on.event(*POOLS)
async def pool_event(
    type: str | None, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    if type == "DELETED":
        memo.controllers.index.discard_pool(namespace or "", name)


# ----- Sandbox ----------------------------------------------------------------------------


@kopf.on.event(*SANDBOXES)
async def sandbox_event(type: str | None, body: kopf.Body, uid: str, memo: Any, **_: Any) -> None:
    """Every watch event of a Sandbox, the initial listing after a start included (type
    None), in one handler. Level-triggered: a Sandbox not placed yet, or whose spec changed
    since its status was written, goes to the work queue, and at a start every one does (the
    resume); the queue reconciles the newest body, once at a time per Sandbox, and retries.
    A Sandbox being deleted gets a task that destroys its container and lets it go: kopf runs
    on.delete handlers only under its own finalizer, and a Sandbox is held by ours. Every
    body is noted for the usage ledger too (kept until its writer's next batch)."""
    controllers: Controllers = memo.controllers
    sandboxes, queue = controllers.sandboxes, controllers.queue
    controllers.ledger.observe(dict(body))
    if type == "DELETED":
        controllers.index.discard_sandbox(uid)
        controllers.launches.forget(uid)
        queue.forget(uid)
        sandboxes.settled.pop(uid, None)
        return
    meta = body.get("metadata") or {}
    controllers.launches.arrived(
        uid,
        meta.get("creationTimestamp"),
        assignment_of(body).get("containerName"),
        listing=type is None,
    )
    if meta.get("deletionTimestamp"):
        queue.forget(uid)
        if FINALIZER in (meta.get("finalizers") or []) and uid not in controllers.finalizing:
            task = asyncio.create_task(
                controllers.finalizer.finalize_and_release(dict(body)), name=f"finalize {uid}"
            )
            controllers.finalizing[uid] = task
            task.add_done_callback(lambda _: controllers.finalizing.pop(uid, None))
        return
    if type is not None and not needs_reconcile(body):
        # The newest state is settled: work queued for an older one is obsolete.
        queue.drop(uid)
        return
    snapshot = {**body, "metadata": dict(meta)}
    generation = int(meta.get("generation") or 0)

    async def work(failures: int) -> None:
        if sandboxes.settled.get(uid) == generation:
            # Queued behind the reconciliation that settled this generation, with a body
            # from before it: the watch has yet to deliver what that one wrote.
            return
        await sandboxes.reconcile(snapshot, failures)

    queue.add(uid, work)


# A daemon that fails (the API server restarted under its status write, say) is started again
# after this many seconds, not kopf's default 60: a pool without its filler makes no warm
# containers meanwhile, an expiry is put off. The restarted one reads its object afresh.
# Found by the chaos suite.
DAEMON_BACKOFF = 2.0


@kopf.daemon(
    *SANDBOXES,
    when=lambda spec, **_: bool((spec.get("lifetime") or {}).get("ttlSeconds")),
    cancellation_timeout=5,
    backoff=DAEMON_BACKOFF,
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
    controllers: Controllers = memo.controllers
    expires = expires_at(str(meta["creationTimestamp"]), SandboxSpec.model_validate(dict(spec)))
    if expires is None:
        return
    due = parse_time(expires).timestamp()
    while not stopped:
        left = due - controllers.clock.now().timestamp()
        if left <= 0:
            logger.info("lifetime over: deleting")
            with contextlib.suppress(NotFound):
                await controllers.kube.delete_sandbox(meta["namespace"], meta["name"], meta["uid"])
            return
        await stopped.wait(min(left, 60.0))


# ----- SandboxHost ------------------------------------------------------------------------


@kopf.timer(*HOSTS, interval=_SETTINGS.probe_interval_seconds, initial_delay=0)
async def host_probe(
    name: str, body: kopf.Body, status: kopf.Status, patch: kopf.Patch, memo: Any, **_: Any
) -> None:
    """Probe the host's agent; kopf writes the status fields that changed."""
    with kopf_errors(), reconciliation("SandboxHost"):
        new = await memo.controllers.hosts.probe(host_record(name, body), dict(status))
    for key, value in new.items():
        if status.get(key) != value:
            patch.status[key] = value


# ----- SandboxPool ------------------------------------------------------------------------


@kopf.daemon(*POOLS, cancellation_timeout=10, backoff=DAEMON_BACKOFF)
async def pool_filler(
    stopped: kopf.DaemonStopped,
    uid: str,
    namespace: str | None,
    name: str,
    body: kopf.Body,
    memo: Any,
    **_: Any,
) -> None:
    """Keep the pool's warm containers: one loop per pool, woken by claims and spec changes."""
    with kopf_errors():
        await memo.controllers.pools.run(uid, namespace or "", name, body, stopped)


@kopf.on.delete(*POOLS)
async def pool_deleted(uid: str, memo: Any, **_: Any) -> None:
    """Destroy the unclaimed warm containers; adopted ones belong to their Sandboxes now."""
    with kopf_errors():
        await memo.controllers.pools.remove(uid)


@contextlib.contextmanager
def kopf_errors() -> Iterator[None]:
    """The reconcilers' errors as kopf's, for the handlers kopf retries itself."""
    try:
        yield
    except RequeueAfter as exc:
        raise kopf.TemporaryError(str(exc), delay=exc.delay) from exc
    except TerminalError as exc:
        raise kopf.PermanentError(str(exc)) from exc
