#!/usr/bin/env python3
"""Benchmark: Sandbox create to Ready, cold (a new container cloned and started), through the
real API server, operator and agent, all on this machine.

The client (bench/client.py) creates Sandboxes and watches them; Ready is the moment the
watch delivers the Ready=True condition. The breakdown comes from the client's clock and the
operator's timing log (same machine, same clock): API write (the create call), operator pickup
(create answered -> reconciliation started), decision write, agent call, status write, and the
watch delivering it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import Stack, speed_probe

from client import run_claims

SPEC = {"template": "busybox", "resources": {"cpus": 1, "memory": "64Mi", "pids": 64}}
TIMING = re.compile(
    r"timing (?P<ns>[^/\s]+)/(?P<name>\S+) started=(?P<started>[0-9.]+) "
    r"decision=(?P<decision>[0-9.]+)ms prepare=(?P<prepare>[0-9.]+)ms "
    r"agent=(?P<agent>[0-9.]+)ms status=(?P<status>[0-9.]+)ms"
)


def pct(samples: list[float], digits: int = 1) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)  # noqa: E731
    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), digits),
        "p90": pick(0.9),
        "p99": pick(0.99),
        "max": round(ordered[-1], digits),
    }


def run_round(stack: Stack, count: int, parallel: int) -> dict[str, Any]:
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    stack.kubectl("create", "namespace", namespace)
    names = [f"s{i}" for i in range(count)]

    # A closed loop: `parallel` clients, each creating its next Sandbox once the last is Ready.
    watched, wall = run_claims(stack.kubeconfig, namespace, names, SPEC, parallel)
    missing = [n for n in names if n not in watched.ready_at]
    if missing:
        raise SystemExit(f"{len(missing)} sandboxes never became Ready, e.g. {missing[:3]}")
    created = {n: (watched.sent[n], watched.answered[n]) for n in names}

    timings: dict[str, re.Match[str]] = {}
    deadline = time.time() + 10
    while len(timings) < count and time.time() < deadline:  # the log may trail the watch a little
        for line in stack.operator_log.read_text().splitlines():
            match = TIMING.search(line)
            if match and match["ns"] == namespace:
                timings.setdefault(match["name"], match)
        time.sleep(0.05)
    end_to_end, api, pickup, decision, agent, status, watch_lag = [], [], [], [], [], [], []
    for name in names:
        t0, t1 = created[name]
        ready = watched.ready_at[name]
        end_to_end.append((ready - t0) * 1000)
        api.append((t1 - t0) * 1000)
        match = timings[name]
        handler_start = float(match["started"])
        spans = [float(match[k]) for k in ("decision", "prepare", "agent", "status")]
        pickup.append((handler_start - t1) * 1000)
        decision.append(spans[0])
        agent.append(spans[2])
        status.append(spans[3])
        # The watch may deliver Ready before the status call returns: then it took no time.
        watch_lag.append(max(0.0, (ready - handler_start) * 1000 - sum(spans)))
    stack.kubectl("delete", "sandboxes", "--all", "-n", namespace, "--timeout=300s")
    stack.kubectl("delete", "namespace", namespace, "--wait=false")
    return {
        "count": count,
        "parallelism": parallel,
        "createToReadyMs": pct(end_to_end),
        "sandboxesPerSecond": round(count / wall, 1),
        "breakdownMs": {
            "apiWrite": pct(api),
            "operatorPickup": pct(pickup),
            "decisionWrite": pct(decision),
            "agentCall": pct(agent),
            "statusWrite": pct(status),
            "watchDelivery": pct(watch_lag),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/operator.json"))
    parser.add_argument("--count", type=int, default=50, help="sandboxes at parallelism 1")
    parser.add_argument(
        "--parallel-count", type=int, default=100, help="sandboxes at parallelism 20"
    )
    args = parser.parse_args()
    probe_before = speed_probe()
    with Stack() as stack:
        run_round(stack, 5, 1)  # warm-up: caches, connections, the page cache of the template
        sequential = run_round(stack, args.count, 1)
        parallel = run_round(stack, args.parallel_count, 20)
    document = {
        "benchmark": "Sandbox create to Ready, cold (busybox): "
        "real API server, operator, agent and LXC",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "speedProbeMs": {"before": probe_before, "after": speed_probe()},
            "note": "etcd, kube-apiserver, kube-controller-manager, operator, agent and the "
            "benchmark client all share this machine",
        },
        "spec": SPEC,
        "target": {"coldP50Ms": 250},
        "rounds": [sequential, parallel],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"\n{'round':<16}{'n':>5}{'p50 ms':>9}{'p90':>8}{'p99':>8}{'max':>8}{'per s':>8}")
    for result in document["rounds"]:
        e2e = result["createToReadyMs"]
        label = f"parallelism {result['parallelism']}"
        print(
            f"{label:<16}{e2e['n']:>5}{e2e['p50']:>9}{e2e['p90']:>8}"
            f"{e2e['p99']:>8}{e2e['max']:>8}{result['sandboxesPerSecond']:>8}"
        )
        parts = ", ".join(f"{k} {v['p50']}" for k, v in result["breakdownMs"].items())
        print(f"  p50 breakdown (ms): {parts}")
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
