"""Benchmark: one placement decision with 100 hosts and 10 000 sandboxes in the scheduler's view.

The hosts and sandboxes are SIMULATED for this benchmark only: 100 HostViews at random places
on Earth in 10 regions, and 10 000 placed sandboxes fed through the operator's own Ledger (as
its Sandbox index feeds it). What is timed is exactly what the operator does per decision:

  locate the client's address (GeoLite2, real database; a cache miss every time unless said),
  read the allocations (Ledger totals + assumed placements + warm containers of 10 pools),
  choose_host with the placement scorer (distance + load) over the 100 hosts.

Writes bench/results/placement.json. Target: at most 1 ms per decision.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

from operator_bench import pct
from stack import speed_probe

from tuxio.operator.geo import GeoPoint, Locator
from tuxio.operator.index import ClusterIndex
from tuxio.operator.inventory import Inventories, Warm
from tuxio.operator.placement import allocations
from tuxio.operator.records import Placed
from tuxio.operator.scheduling import (
    Allocation,
    Decision,
    HostView,
    Request,
    Tally,
    choose_host,
    placement_scorer,
)
from tuxio.operator.settings import OperatorSettings

ROOT = Path(__file__).resolve().parents[1]
GiB = 2**30


def simulated_hosts(rng: random.Random, count: int) -> list[HostView]:
    return [
        HostView(
            name=f"sim-{i:03d}",
            ready=rng.random() > 0.03,
            unschedulable=rng.random() < 0.02,
            templates=frozenset({"busybox", "debian"} if i % 4 else {"busybox"}),
            shared_cpus=rng.choice([14, 30, 62]),
            memory_bytes=rng.choice([64, 128, 256]) * GiB,
            region=f"region-{i % 10}",
            load=rng.uniform(0, 8),
            location=GeoPoint(rng.uniform(-50, 65), rng.uniform(-180, 180), f"sim-{i:03d}"),
        )
        for i in range(count)
    ]


def simulated_cluster(
    rng: random.Random, hosts: list[HostView], sandboxes: int
) -> tuple[ClusterIndex, Inventories]:
    index, inventories = ClusterIndex(time.monotonic), Inventories()
    for i in range(sandboxes):
        host = hosts[rng.randrange(len(hosts))].name
        index.set_sandbox(
            f"uid-{i}",
            f"ns-{i % 50}",
            f"sbx-{i}",
            Placed(
                uid=f"uid-{i}",
                namespace=f"ns-{i % 50}",
                name=f"sbx-{i}",
                host=host,
                container=f"sbx-uid-{i}",
                phase="Running",
                state="Running",
                restart_policy="Always",
                memory_bytes=rng.choice([128, 256, 512]) << 20,
                cpus=1,
                usage_observed_at=None,
                deleting=False,
            ),
        )
    for p in range(10):  # 10 pools of 30 warm containers
        state = inventories.open(f"pool-{p}", "ns", f"pool-{p}")
        for w in range(30):
            name = f"pool-{p}-{w}"
            host = hosts[rng.randrange(len(hosts))].name
            state.warm[name] = Warm(name, host, "busybox", "hash", True, 256 << 20, 1)
    for i in range(20):  # decisions written but not yet back through the watch
        index.assumed.assume(f"assumed-{i}", hosts[i].name, Allocation.of(256 << 20, 1))
    return index, inventories


def warm_containers(inventories: Inventories) -> int:
    tally = Tally()
    inventories.count_into(tally)
    return sum(a.sandboxes for a in tally.totals().values())


def public_addresses(rng: random.Random, count: int) -> list[str]:
    found: list[str] = []
    while len(found) < count:
        address = ipaddress.IPv4Address(rng.randrange(1 << 24, 224 << 24))
        if address.is_global:
            found.append(str(address))
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "placement.json")
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--sandboxes", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=5000)
    args = parser.parse_args()

    rng = random.Random(2026)
    database = subprocess.run(
        [str(ROOT / "hack" / "fetch-geolite2.sh")], capture_output=True, text=True, check=True
    ).stdout.strip()
    hosts = simulated_hosts(rng, args.hosts)
    index, inventories = simulated_cluster(rng, hosts, args.sandboxes)
    locator = Locator(Path(database), cache_size=args.decisions * 2)
    settings = OperatorSettings()
    scorer = placement_scorer(settings.distance_weight)
    overcommit = settings.memory_overcommit
    addresses = public_addresses(rng, args.decisions)  # all distinct: every lookup a cache miss

    lookup, view, choose, total = [], [], [], []
    kinds: dict[str, int] = {}
    for i in range(args.decisions):
        started = time.perf_counter()
        located = locator.locate(addresses[i])
        t1 = time.perf_counter()
        used = allocations(index, inventories)
        t2 = time.perf_counter()
        request = Request(
            template="busybox",
            cpus=1,
            memory_bytes=256 << 20,
            client=located if isinstance(located, GeoPoint) else None,
        )
        decision = choose_host(hosts, used, request, scorer=scorer, memory_overcommit=overcommit)
        t3 = time.perf_counter()
        assert isinstance(decision, Decision), decision
        kinds[decision.kind] = kinds.get(decision.kind, 0) + 1
        lookup.append((t1 - started) * 1000)
        view.append((t2 - t1) * 1000)
        choose.append((t3 - t2) * 1000)
        total.append((t3 - started) * 1000)

    result = {
        "benchmark": "placement decision",
        "simulated": (
            f"{args.hosts} hosts and {args.sandboxes} sandboxes are simulated (in-memory "
            "HostViews and Ledger entries), for this benchmark only; the GeoIP database is "
            "the real GeoLite2 City (hack/fetch-geolite2.sh)"
        ),
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "speedProbeMs": speed_probe(),
        },
        "hosts": args.hosts,
        "sandboxes": len(index.ledger),
        "warmContainers": warm_containers(inventories),
        "decisions": args.decisions,
        "decisionKinds": kinds,
        "targetMs": 1.0,
        "decisionMs": pct(total, 3),
        "parts": {
            "geoipLookupMs": pct(lookup, 3),
            "allocationsMs": pct(view, 3),
            "chooseHostMs": pct(choose, 3),
        },
    }
    result["targetMet"] = result["decisionMs"]["p99"] <= 1.0  # type: ignore[index]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
