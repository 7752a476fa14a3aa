#!/usr/bin/env python3
"""Benchmark: SandboxPools. Warm claim to Ready at parallelism 1 and 20, sustained claims per
second, pool fill 0 -> 100 and 0 -> 300, and the debian template cold versus warm. Everything
(API server, etcd, operator, agent, containers, this client) runs on this machine.

Claim to Ready is measured as the cold benchmark measures create to Ready: from the client's
create call to the watch delivering Ready=True. Writes bench/results/pool.json and a PNG plot of
the latency distributions next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from operator_bench import pct
from stack import BIN, GROUP, VERSION, Stack, speed_probe

from client import ClaimRun, LeanClient, run_claims

RESOURCES = {"cpus": 1, "memory": "64Mi", "pids": 64}
TIMING = re.compile(
    r"timing (?P<ns>[^/\s]+)/(?P<name>\S+) started=(?P<started>[0-9.]+) (?P<spans>.*)"
)


def make_pool(
    stack: Stack, namespace: str, name: str, replicas: int, template: str = "busybox"
) -> float:
    """Create a pool and return the seconds until all its warm containers are ready, as a
    watch on the pool delivers its status."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SandboxPool",
        "metadata": {"name": name},
        "spec": {"template": template, "replicas": replicas, "resources": RESOURCES},
    }

    async def run() -> float:
        async with LeanClient(stack.kubeconfig) as client:
            watching = asyncio.create_task(client.wait_pool_ready(namespace, name, replicas))
            await asyncio.sleep(0.2)  # the watch is open before the pool exists
            started = time.time()
            stack.custom.create_namespaced_custom_object(
                GROUP, VERSION, namespace, "sandboxpools", body
            )
            return await asyncio.wait_for(watching, 300) - started

    return asyncio.run(run())


def claims(
    stack: Stack,
    namespace: str,
    pool: str | None,
    count: int,
    parallel: int,
    template: str = "busybox",
    closed_loop: bool = True,
) -> dict[str, Any]:
    """`count` Sandboxes claiming from `pool` (or cold with `template`), `parallel` at a time
    (closed loop: each client creates its next once its last is Ready), or all at once from
    `parallel` connections (open loop)."""
    spec: dict[str, Any] = {"resources": RESOURCES}
    spec.update({"poolRef": {"name": pool}} if pool else {"template": template})
    prefix = uuid.uuid4().hex[:4]
    names = [f"c{prefix}-{i}" for i in range(count)]

    watched, wall = run_claims(stack.kubeconfig, namespace, names, spec, parallel, closed_loop)
    latencies = watched.latencies_ms()
    if len(latencies) < count:
        raise SystemExit(
            f"{count - len(latencies)} of {count} sandboxes in {namespace} never became Ready"
        )
    warm = sum(1 for n in names if watched.from_pool.get(n))
    result: dict[str, Any] = {
        "latencyMs": pct(latencies),
        "samples": sorted(round(x, 2) for x in latencies),
        "perSecond": round(count / wall, 1),
        "warm": warm,
        "cold": count - warm,
    }
    if parallel == 1 and closed_loop:
        result["breakdownMs"] = breakdown(stack, namespace, watched, names)
    return result


def breakdown(stack: Stack, namespace: str, watched: ClaimRun, names: list[str]) -> dict[str, Any]:
    """Where a claim's time goes, from the client's clock and the operator's timing log (one
    machine, one clock): the create call (the claim webhook included), the watch delivering
    it to the operator, the agent's PUT, the status write, the watch delivering Ready."""
    spans: dict[str, tuple[float, dict[str, float]]] = {}
    deadline = time.time() + 10
    while len(spans) < len(names) and time.time() < deadline:  # the log may trail the watch
        for line in stack.operator_log.read_text().splitlines():
            found = TIMING.search(line)
            if found and found["ns"] == namespace:
                timed = re.findall(r"(\w+)=([0-9.]+)ms", found["spans"])
                spans[found["name"]] = (float(found["started"]), {k: float(v) for k, v in timed})
        time.sleep(0.05)
    parts: dict[str, list[float]] = {
        k: [] for k in ("create", "pickup", "agent", "status", "watch")
    }
    for name in names:
        if name not in spans:
            continue
        started, timed = spans[name]
        sent, answered, ready = watched.sent[name], watched.answered[name], watched.ready_at[name]
        parts["create"].append((answered - sent) * 1000)
        parts["pickup"].append((started - answered) * 1000)
        parts["agent"].append(timed.get("agent", 0.0))
        parts["status"].append(timed.get("status", 0.0))
        parts["watch"].append(max(0.0, (ready - started) * 1000 - sum(timed.values())))
    return {k: pct(v) for k, v in parts.items() if v}


def fresh_namespace(stack: Stack) -> str:
    namespace = f"pool-bench-{uuid.uuid4().hex[:6]}"
    stack.kubectl("create", "namespace", namespace)
    print(f"[{datetime.now(UTC):%H:%M:%S}] round in {namespace}", flush=True)
    return namespace


def cleanup(stack: Stack, namespace: str) -> None:
    """Delete the round's objects and wait until the host has none of their containers left,
    so the next round starts on an empty host."""
    stack.kubectl("delete", "sandboxes", "--all", "-n", namespace, "--timeout=600s")
    stack.kubectl("delete", "sandboxpools", "--all", "-n", namespace, "--timeout=600s")
    stack.kubectl("delete", "namespace", namespace, "--wait=false")
    deadline = time.time() + 300
    while time.time() < deadline:
        left = httpx.get(
            f"http://127.0.0.1:{stack.agent_port}/v1/containers",
            params={"label": "tux.io/managed-by=tuxio-operator"},
            headers={"Authorization": f"Bearer {stack.token}"},
            timeout=120,
        ).json()["items"]
        if not left:
            return
        time.sleep(0.5)
    raise SystemExit(f"containers of {namespace} were not all removed")


def plot(results: dict[str, Any], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 5))
    for label, samples in results.items():
        ordered = sorted(samples)
        axis.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=label)
    axis.set_xscale("log")
    axis.set_xlabel("create to Ready (ms, log scale)")
    axis.set_ylabel("fraction of sandboxes")
    axis.set_title("tuxio: Sandbox create to Ready on one 2-core machine")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/pool.json"))
    parser.add_argument("--claims", type=int, default=50)
    parser.add_argument("--skip-debian", action="store_true", help="leave out the debian rounds")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    probe_before = speed_probe()
    with Stack(operator_env={"TUXIO_OPERATOR_POOL_REFRESH_SECONDS": "30"}) as stack:
        if not args.skip_debian:
            subprocess.run(
                [
                    str(BIN / "tuxio-agent"),
                    "--data-dir",
                    str(stack.data_dir),
                    "template",
                    "build",
                    "debian",
                    "--cache-dir",
                    str(Path.home() / ".cache" / "tuxio" / "debootstrap"),
                ],
                check=True,
                capture_output=True,
            )
            deadline = time.time() + 60
            while "debian" not in (
                stack.custom.get_cluster_custom_object(GROUP, VERSION, "sandboxhosts", "bench").get(
                    "status"
                )
                or {}
            ).get("templates", []):
                if time.time() > deadline:
                    raise SystemExit("the host never reported the debian template")
                time.sleep(0.5)
        namespace = fresh_namespace(stack)
        make_pool(stack, namespace, "warmup", 10)
        claims(stack, namespace, "warmup", 10, 1)
        cleanup(stack, namespace)

        for replicas in (100, 300):
            namespace = fresh_namespace(stack)
            results[f"fill0To{replicas}Seconds"] = round(
                make_pool(stack, namespace, "fill", replicas), 2
            )
            cleanup(stack, namespace)

        namespace = fresh_namespace(stack)
        make_pool(stack, namespace, "p1", args.claims + 20)
        results["warmParallelism1"] = claims(stack, namespace, "p1", args.claims, 1)
        cleanup(stack, namespace)

        namespace = fresh_namespace(stack)
        make_pool(stack, namespace, "p20", 2 * args.claims + 40)
        results["warmParallelism20"] = claims(stack, namespace, "p20", 2 * args.claims, 20)
        cleanup(stack, namespace)

        namespace = fresh_namespace(stack)
        make_pool(stack, namespace, "burst", 300)
        results["sustainedBurst"] = claims(stack, namespace, "burst", 200, 50, closed_loop=False)
        cleanup(stack, namespace)

        namespace = fresh_namespace(stack)
        results["coldParallelism1"] = claims(stack, namespace, None, 30, 1)
        cleanup(stack, namespace)

        if not args.skip_debian:
            namespace = fresh_namespace(stack)
            results["debianCold"] = claims(stack, namespace, None, 10, 1, template="debian")
            make_pool(stack, namespace, "deb", 15, template="debian")
            results["debianWarm"] = claims(stack, namespace, "deb", 10, 1)
            cleanup(stack, namespace)

    document = {
        "benchmark": "SandboxPool: warm claims, fill, sustained claims; cold for comparison",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "speedProbeMs": {"before": probe_before, "after": speed_probe()},
            "note": "API server, etcd, kube-controller-manager, operator, agent, containers "
            "and this client share the machine",
        },
        "resources": RESOURCES,
        "targets": {
            "warmP50MsParallelism1": 20,
            "warmP50MsParallelism20": 50,
            "claimsPerSecond": 100,
            "fill0To300Seconds": 6,
        },
        **{
            k: ({kk: vv for kk, vv in v.items() if kk != "samples"} if isinstance(v, dict) else v)
            for k, v in results.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    curves = {
        label: results[key]["samples"]
        for key, label in (
            ("warmParallelism1", "warm, 1 at a time"),
            ("warmParallelism20", "warm, 20 at a time"),
            ("coldParallelism1", "cold, 1 at a time"),
            ("debianWarm", "debian warm"),
            ("debianCold", "debian cold"),
        )
        if key in results
    }
    plot(curves, args.out.with_suffix(".png"))
    print(f"\n{'round':<22}{'n':>5}{'p50 ms':>9}{'p90':>8}{'p99':>8}{'per s':>8}{'warm':>6}")
    for key, value in results.items():
        if isinstance(value, dict):
            lat = value["latencyMs"]
            print(
                f"{key:<22}{lat['n']:>5}{lat['p50']:>9}{lat['p90']:>8}{lat['p99']:>8}"
                f"{value['perSecond']:>8}{value['warm']:>6}"
            )
        else:
            print(f"{key:<22}{value:>9}")
    print(f"\nwritten to {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
