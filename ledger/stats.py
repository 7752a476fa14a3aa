"""The ledger's figures (pure): visitors, concurrency, sandbox-hours, CPU, utilisation, cost.

A sandbox counts from its creation to its deletion (or the end of the period while it still
exists), clipped to the period; a visitor is a sandbox created in the period (each visit gets
one), an active visitor one whose sandbox became ready. Hosts are those the ledger names.
The host cost is spread over the period; the per-second comparison prices each sandbox's own
allocation (cores and memory) for its lifetime, as E2B bills.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from .pricing import HostCost, PerSecondPrice
from .store import LedgerEvent, LedgerSandbox

__all__ = ["Figures", "Interval", "figures", "intervals"]

YEAR_SECONDS = 365 * 24 * 3600
GIB = 2**30


@dataclass(frozen=True)
class Interval:
    uid: str
    start: datetime
    end: datetime
    cpus: int
    memory_gib: float

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


@dataclass
class Figures:
    since: datetime
    until: datetime
    sandboxes: int
    visitors: int
    active_visitors: int
    daily_visitors: dict[str, int]
    peak_concurrency: int
    sandbox_hours: float
    cpu_seconds: float
    hosts: int
    host_cpu_utilisation: float  # CPU seconds used / core-seconds the hosts had
    host_memory_utilisation: float  # memory-seconds allocated / memory-seconds the hosts had
    host_cost: float
    cost_per_active_visitor: float | None
    cost_per_sandbox_hour: float | None
    per_second_name: str
    per_second_cost: float
    density_per_gib: float | None
    capacity_per_host: int | None  # sandboxes one host holds at the recorded density
    cost_per_sandbox_hour_at_capacity: float | None
    concurrency: list[tuple[datetime, int]] = field(default_factory=list)
    # (time, host cost so far, the per-second price of the usage so far)
    cost_over_time: list[tuple[datetime, float, float]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        series = ("concurrency", "cost_over_time")
        out = {k: v for k, v in self.__dict__.items() if k not in series}
        out["since"], out["until"] = self.since.isoformat(), self.until.isoformat()
        out["concurrency"] = [[at.isoformat(), n] for at, n in self.concurrency]
        out["cost_over_time"] = [[at.isoformat(), h, p] for at, h, p in self.cost_over_time]
        return out


def intervals(
    sandboxes: Iterable[LedgerSandbox],
    events: Iterable[LedgerEvent],
    since: datetime,
    until: datetime,
) -> list[Interval]:
    """Each sandbox's lifetime within [since, until)."""
    times: dict[str, dict[str, datetime]] = defaultdict(dict)
    for uid, name, at in events:
        times[uid][name] = at
    found = []
    for row in sandboxes:
        seen = times.get(row["uid"], {})
        created = seen.get("created")
        if created is None:
            continue
        start = max(created, since)
        end = min(seen.get("deleted", until), until)
        if end <= start:
            continue
        memory = (row.get("memory_bytes") or 0) / GIB
        found.append(Interval(row["uid"], start, end, int(row.get("cpus") or 0), memory))
    return found


def _concurrency(spans: Sequence[Interval]) -> list[tuple[datetime, int]]:
    """The number running after each start or end, in time order (ends before starts at
    the same instant: a sandbox replaced at once is not two)."""
    steps = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans])
    series: list[tuple[datetime, int]] = []
    running = 0
    for at, change in steps:
        running += change
        if series and series[-1][0] == at:
            series[-1] = (at, running)
        else:
            series.append((at, running))
    return series


def _costs(
    spans: Sequence[Interval],
    host_per_second: float,
    price: PerSecondPrice,
    since: datetime,
    until: datetime,
    points: int = 100,
) -> list[tuple[datetime, float, float]]:
    """Cumulative cost at `points` + 1 evenly spaced times of the period."""
    step = (until - since) / points
    series = []
    for i in range(points + 1):
        at = since + step * i
        used = sum(
            max(0.0, (min(s.end, at) - s.start).total_seconds())
            * (s.cpus * price.per_vcpu_second + s.memory_gib * price.per_gib_second)
            for s in spans
        )
        series.append((at, host_per_second * (at - since).total_seconds(), used))
    return series


def figures(
    sandboxes: Sequence[LedgerSandbox],
    events: Sequence[LedgerEvent],
    host: HostCost,
    price: PerSecondPrice,
    since: datetime | None = None,
    until: datetime | None = None,
    density_per_gib: float | None = None,
) -> Figures:
    until = until or datetime.now(UTC)
    created = [at for _, name, at in events if name == "created"]
    since = since or (min(created) if created else until - timedelta(days=1))
    spans = intervals(sandboxes, events, since, until)
    in_period = {uid for uid, name, at in events if name == "created" and since <= at < until}
    ready = {uid for uid, name, _ in events if name == "ready"}
    daily = Counter(
        at.astimezone(UTC).date().isoformat()
        for uid, name, at in events
        if name == "created" and uid in in_period
    )
    by_uid = {row["uid"]: row for row in sandboxes}
    hosts = len({row["host"] for row in sandboxes if row.get("host")}) or 1
    period = (until - since).total_seconds()
    cpu_seconds = sum(by_uid[s.uid].get("cpu_seconds") or 0.0 for s in spans)
    memory_gib_seconds = sum(s.memory_gib * s.seconds for s in spans)
    host_cost = host.per_year * hosts * period / YEAR_SECONDS
    sandbox_hours = sum(s.seconds for s in spans) / 3600
    per_second = sum(
        s.seconds * (s.cpus * price.per_vcpu_second + s.memory_gib * price.per_gib_second)
        for s in spans
    )
    series = _concurrency(spans)
    active = len(in_period & ready)
    capacity = int(density_per_gib * host.memory_gib) if density_per_gib else None
    return Figures(
        since=since,
        until=until,
        sandboxes=len(spans),
        visitors=len(in_period),
        active_visitors=active,
        daily_visitors=dict(sorted(daily.items())),
        peak_concurrency=max((n for _, n in series), default=0),
        sandbox_hours=sandbox_hours,
        cpu_seconds=cpu_seconds,
        hosts=hosts,
        host_cpu_utilisation=cpu_seconds / (hosts * host.cores * period) if period else 0.0,
        host_memory_utilisation=memory_gib_seconds / (hosts * host.memory_gib * period)
        if period
        else 0.0,
        host_cost=host_cost,
        cost_per_active_visitor=host_cost / active if active else None,
        cost_per_sandbox_hour=host_cost / sandbox_hours if sandbox_hours else None,
        per_second_name=price.name,
        per_second_cost=per_second,
        density_per_gib=density_per_gib,
        capacity_per_host=capacity,
        cost_per_sandbox_hour_at_capacity=host.per_year / (YEAR_SECONDS / 3600) / capacity
        if capacity
        else None,
        concurrency=series,
        cost_over_time=_costs(spans, host.per_year * hosts / YEAR_SECONDS, price, since, until),
    )
