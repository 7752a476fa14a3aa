"""The operator's metrics (prometheus_client, default registry): launches, reconciliations,
the work queue and the pools. Labels are kinds, results, templates and pools: all bounded by
what administrators create, never by visitors or Sandboxes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram

from tuxio.common.metrics import LATENCY_BUCKETS

from .errors import RequeueAfter, TerminalError

__all__ = [
    "CLAIM_SECONDS",
    "CREATION_SECONDS",
    "POOL_MISSES",
    "RECONCILE_SECONDS",
    "RECONCILE_TOTAL",
    "WORKQUEUE_ADDS",
    "WORKQUEUE_DEPTH",
    "WORKQUEUE_RETRIES",
    "reconciliation",
]

CLAIM_SECONDS = Histogram(
    "tuxio_sandbox_claim_duration_seconds",
    "From a Sandbox's arrival (its claim at admission, else the operator's first sight of it) "
    "to the status write that first makes it Ready; once per Sandbox, retries included. "
    "launch: warm (a pool's warm container adopted) or cold (a container made for it).",
    ["launch", "template"],
    buckets=LATENCY_BUCKETS,
)
CREATION_SECONDS = Histogram(
    "tuxio_container_creation_duration_seconds",
    "From the first request to an agent for a new container to its answer that the container "
    "runs; once per container, retries included. launch: warm (a pool's warm container) or "
    "cold (a Sandbox's own).",
    ["launch", "template"],
    buckets=LATENCY_BUCKETS,
)
POOL_MISSES = Counter(
    "tuxio_pool_misses_total",
    "Sandboxes of a pool that found no warm container and were created cold.",
    ["namespace", "pool"],
)
RECONCILE_TOTAL = Counter(
    "tuxio_operator_reconciliations_total",
    "Reconciliations by kind and result: success, requeue (retried after a delay), terminal "
    "(waits for a change) or error (unexpected, retried with backoff).",
    ["kind", "result"],
)
RECONCILE_SECONDS = Histogram(
    "tuxio_operator_reconciliation_duration_seconds",
    "How long one reconciliation took, by kind.",
    ["kind"],
    buckets=LATENCY_BUCKETS,
)
WORKQUEUE_DEPTH = Gauge(
    "tuxio_operator_workqueue_depth",
    "Objects with a reconciliation waiting (not started yet, or waiting out a retry delay).",
    ["name"],
)
WORKQUEUE_ADDS = Counter(
    "tuxio_operator_workqueue_adds_total", "Work handed to the queue.", ["name"]
)
WORKQUEUE_RETRIES = Counter(
    "tuxio_operator_workqueue_retries_total",
    "Reconciliations the queue runs again after a delay (requeue or error).",
    ["name"],
)


@contextlib.contextmanager
def reconciliation(kind: str) -> Iterator[None]:
    """Count one reconciliation of `kind` by its result, and time it."""
    started = time.perf_counter()
    result = "success"
    try:
        yield
    except RequeueAfter:
        result = "requeue"
        raise
    except TerminalError:
        result = "terminal"
        raise
    except Exception:
        result = "error"
        raise
    finally:
        RECONCILE_TOTAL.labels(kind, result).inc()
        RECONCILE_SECONDS.labels(kind).observe(time.perf_counter() - started)
