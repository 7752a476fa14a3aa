"""The pools' gauges, read at scrape time from what the operator already holds: warm
containers from the pools' inventories, desired from their specs (no series outlives its
pool: there is nothing to reset when one is deleted)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .index import ClusterIndex
from .inventory import Inventories

__all__ = ["PoolCollector"]

_LABELS = ["namespace", "pool"]


class PoolCollector(Collector):
    """tuxio_pool_warm_containers, tuxio_pool_creating_containers, tuxio_pool_desired_containers."""

    def __init__(self, index: ClusterIndex, inventories: Inventories) -> None:
        self.index = index
        self.inventories = inventories

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield from _families()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        warm, creating, desired = _families()
        for (namespace, name), pool in list(self.index.pools.items()):
            labels = [namespace, name]
            desired.add_metric(labels, pool.spec.replicas)
            state = self.inventories.get(pool.uid)
            warm.add_metric(labels, state.ready_count() if state is not None else 0)
            creating.add_metric(labels, len(state.inflight) if state is not None else 0)
        yield from (warm, creating, desired)


def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "tuxio_pool_warm_containers",
            "Ready warm containers of the pool, waiting for a claim.",
            labels=_LABELS,
        ),
        GaugeMetricFamily(
            "tuxio_pool_creating_containers",
            "Warm containers of the pool being made now.",
            labels=_LABELS,
        ),
        GaugeMetricFamily(
            "tuxio_pool_desired_containers",
            "Warm containers the pool is to keep (spec.replicas).",
            labels=_LABELS,
        ),
    )
