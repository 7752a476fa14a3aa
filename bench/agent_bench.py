#!/usr/bin/env python3
"""Benchmark of the node agent on this host (not a test: timings belong here).

- PUT-to-running latency over busybox containers created one at a time, and 20 at a time:
  clone + config + start + limits + verify, as the client sees it over HTTP.
- no-op PUT and GET latency on a running container, DELETE latency;
- the agent's peak RSS;
- density: idle busybox sandboxes with limits started until something gives or a cap;
- the cost of disk quotas on cold creates: the same sequential creates on an agent without
  disk limits (disk_backend none) and on one with the ext4-image backend.

Writes JSON (default bench/results/agent.json) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

AGENT = str(Path(sys.executable).with_name("tuxio-agent"))
SPEC = {"template": "busybox", "limits": {"cpus": 1, "memory": "64Mi", "pids": 64}}
DENSE_SPEC = {"template": "busybox", "limits": {"cpus": 1, "memory": "32Mi", "pids": 32}}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "n": len(ordered),
        "p50": round(statistics.median(ordered), 2),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "max": round(ordered[-1], 2),
        "mean": round(statistics.fmean(ordered), 2),
    }


def meminfo() -> dict[str, int]:
    values = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) * 1024
    return values


def rss(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":")
            fields[key] = int(value.split()[0]) * 1024
    return {"rssBytes": fields["VmRSS"], "peakRssBytes": fields["VmHWM"]}


async def timed(
    client: httpx.AsyncClient, method: str, path: str, **kw: Any
) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await client.request(method, path, **kw)
    return (time.perf_counter() - started) * 1000, response


async def create_many(
    client: httpx.AsyncClient, names: list[str], parallel: int, spec: dict[str, Any]
) -> tuple[list[float], float]:
    gate = asyncio.Semaphore(parallel)
    latencies: list[float] = []

    async def one(name: str) -> None:
        async with gate:
            ms, response = await timed(client, "PUT", f"/v1/containers/{name}", json=spec)
            if response.status_code != 200 or response.json()["state"] != "running":
                raise RuntimeError(f"{name}: {response.status_code} {response.text[:300]}")
            latencies.append(ms)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in names))
    return latencies, time.perf_counter() - started


async def delete_many(client: httpx.AsyncClient, names: list[str], parallel: int) -> list[float]:
    gate = asyncio.Semaphore(parallel)
    latencies: list[float] = []

    async def one(name: str) -> None:
        async with gate:
            ms, response = await timed(client, "DELETE", f"/v1/containers/{name}")
            response.raise_for_status()
            latencies.append(ms)

    await asyncio.gather(*(one(n) for n in names))
    return latencies


async def density(client: httpx.AsyncClient, cap: int, batch: int) -> dict[str, Any]:
    """Start idle limited sandboxes until a PUT fails or `cap` run; then check and remove them."""
    before = meminfo()["MemAvailable"]
    names: list[str] = []
    failure = None
    started = time.perf_counter()
    while len(names) < cap:
        chunk = [f"dense-{len(names) + i}" for i in range(min(batch, cap - len(names)))]
        try:
            await create_many(client, chunk, 4, DENSE_SPEC)
        except (RuntimeError, httpx.HTTPError) as exc:
            failure = str(exc)[:500]
            break
        names += chunk
    elapsed = time.perf_counter() - started
    after = meminfo()["MemAvailable"]
    listed = (await client.get("/v1/containers", timeout=600)).json()["items"]
    running = sum(1 for c in listed if c["name"].startswith("dense-") and c["state"] == "running")
    probes = names[:: max(1, len(names) // 10)]
    answers = [
        (await client.post(f"/v1/containers/{n}/exec", json={"argv": ["true"]})).json()["exitCode"]
        for n in probes
    ]
    host = (await client.get("/v1/host")).json()
    result = {
        "asked": cap,
        "started": len(names),
        "runningAtOnce": running,
        "execProbesOk": sum(1 for a in answers if a == 0),
        "execProbes": len(answers),
        "stoppedBy": failure or f"the cap of {cap}",
        "secondsToStart": round(elapsed, 1),
        "hostMemoryPerSandboxBytes": round((before - after) / max(1, len(names))),
        "load1": host["load"][0],
    }
    # Every container found (also any that a failed batch left half-made) is removed.
    leftovers = [c["name"] for c in listed if c["name"].startswith("dense-")]
    await delete_many(client, sorted(set(names) | set(leftovers)), 4)
    return result


async def run(url: str, token: str, agent_pid: int, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(
        base_url=url, headers=headers, timeout=120, limits=limits
    ) as client:
        # Warm up: first start pays for page cache and the seccomp compile.
        await create_many(client, [f"warm-{i}" for i in range(5)], 1, SPEC)
        await delete_many(client, [f"warm-{i}" for i in range(5)], 1)

        sequential = [f"seq-{i}" for i in range(args.count)]
        seq_lat, _ = await create_many(client, sequential, 1, SPEC)
        noop = [
            (await timed(client, "PUT", f"/v1/containers/{sequential[0]}", json=SPEC))[0]
            for _ in range(50)
        ]
        get = [
            (await timed(client, "GET", f"/v1/containers/{sequential[0]}"))[0] for _ in range(50)
        ]
        seq_del = await delete_many(client, sequential, 1)

        parallel = [f"par-{i}" for i in range(args.parallel_count)]
        par_lat, par_wall = await create_many(client, parallel, 20, SPEC)
        par_del = await delete_many(client, parallel, 20)

        memory = rss(agent_pid)
        dense = await density(client, args.density_cap, 50) if args.density_cap else None
        memory_after = rss(agent_pid)
    return {
        "putToRunningMs": {
            "sequential": percentiles(seq_lat),
            "parallel20": {
                **percentiles(par_lat),
                "containersPerSecond": round(len(parallel) / par_wall, 1),
            },
        },
        "noopPutMs": percentiles(noop),
        "getMs": percentiles(get),
        "deleteMs": {"sequential": percentiles(seq_del), "parallel20": percentiles(par_del)},
        "agentMemory": {
            "afterLatencyRuns": memory,
            "peakRssBytes": memory_after["peakRssBytes"],
        },
        "density": dense,
    }


def start_agent(data_dir: Path, port: int, disk_backend: str) -> subprocess.Popen[bytes]:
    """An agent on `data_dir` (its busybox template and token made first), once healthy."""
    subprocess.run(
        [AGENT, "--data-dir", str(data_dir), "template", "build", "busybox"],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [AGENT, "token", "generate", "--out", str(data_dir / "token")],
        check=True,
        capture_output=True,
    )
    with (data_dir / "agent.log").open("wb") as log:
        agent = subprocess.Popen(
            [
                AGENT,
                "--data-dir",
                str(data_dir),
                "serve",
                "--port",
                str(port),
                "--token-file",
                str(data_dir / "token"),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "TUXIO_AGENT_DISK_BACKEND": disk_backend,
                "TUXIO_AGENT_METRICS_PORT": "0",  # not measured here
            },
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return agent
        except httpx.HTTPError:
            pass
        if agent.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((data_dir / "agent.log").read_text())
        time.sleep(0.05)


def stop_agent(agent: subprocess.Popen[bytes] | None, data_dir: Path) -> None:
    """Stop the agent and remove whatever it left (containers, their disk images)."""
    if agent is not None:
        agent.terminate()
        agent.wait(timeout=60)
    lxcpath = data_dir / "containers"
    if lxcpath.is_dir():
        for entry in lxcpath.iterdir():
            subprocess.run(
                ["umount", "-l", str(entry / "overlay")], capture_output=True, check=False
            )
            subprocess.run(
                ["lxc-destroy", "-P", str(lxcpath), "-n", entry.name, "-f"],
                capture_output=True,
                check=False,
            )
    shutil.rmtree(data_dir, ignore_errors=True)


async def cold_creates(url: str, token: str, count: int) -> list[float]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        await create_many(client, [f"warm-{i}" for i in range(5)], 1, SPEC)
        await delete_many(client, [f"warm-{i}" for i in range(5)], 1)
        names = [f"cold-{i}" for i in range(count)]
        latencies, _ = await create_many(client, names, 1, SPEC)
        await delete_many(client, names, 1)
    return latencies


def disk_quota_cost(count: int, port: int) -> dict[str, Any]:
    """Sequential cold creates without disk limits and with the ext4-image backend."""
    measured: dict[str, dict[str, float]] = {}
    for backend in ("none", "ext4-image"):
        data_dir = Path(tempfile.mkdtemp(prefix=f"tuxio-bench-{backend}-", dir="/var/tmp"))
        agent = None
        try:
            agent = start_agent(data_dir, port, backend)
            token = (data_dir / "token").read_text().strip()
            measured[backend] = percentiles(
                asyncio.run(cold_creates(f"http://127.0.0.1:{port}", token, count))
            )
        finally:
            stop_agent(agent, data_dir)
    without, with_ = measured["none"]["p50"], measured["ext4-image"]["p50"]
    return {
        "putToRunningMs": measured,
        "overheadP50Ms": round(with_ - without, 2),
        "ratioP50": round(with_ / without, 3) if without else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/agent.json"))
    parser.add_argument("--count", type=int, default=60, help="containers created one at a time")
    parser.add_argument(
        "--parallel-count", type=int, default=100, help="containers created 20 at a time"
    )
    parser.add_argument("--density-cap", type=int, default=1000, help="0 skips the density run")
    parser.add_argument(
        "--disk-count", type=int, default=60, help="cold creates per disk backend compared"
    )
    parser.add_argument(
        "--port", type=int, default=7491, help="the agent's port (the bench's own agents)"
    )
    args = parser.parse_args()

    disk = disk_quota_cost(args.disk_count, args.port) if args.disk_count else None
    data_dir = Path(tempfile.mkdtemp(prefix="tuxio-bench-", dir="/var/tmp"))
    agent = None
    try:
        agent = start_agent(data_dir, args.port, "ext4-image")
        url = f"http://127.0.0.1:{args.port}"
        results = asyncio.run(run(url, (data_dir / "token").read_text().strip(), agent.pid, args))
    finally:
        stop_agent(agent, data_dir)

    document = {
        "benchmark": "tuxio node agent",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "memoryBytes": meminfo()["MemTotal"],
            "kernel": platform.release(),
            "cgroup": "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1 (hybrid)",
            "lxc": subprocess.run(
                ["lxc-start", "--version"], capture_output=True, text=True
            ).stdout.strip(),
        },
        "spec": SPEC,
        "densitySpec": DENSE_SPEC,
        "targets": {"putToRunningP50Ms": 60, "idleSandboxes": 500, "diskQuotaRatioP50": 2.0},
        "diskBackend": "ext4-image",
        **results,
        "diskQuota": disk,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print_table(document)
    print(f"\nwritten to {args.out}")
    return 0


def print_table(doc: dict[str, Any]) -> None:
    put = doc["putToRunningMs"]
    rows = [
        ("PUT to running, 1 at a time", put["sequential"]),
        ("PUT to running, 20 at a time", put["parallel20"]),
        ("no-op PUT (converged)", doc["noopPutMs"]),
        ("GET observed state", doc["getMs"]),
        ("DELETE, 1 at a time", doc["deleteMs"]["sequential"]),
        ("DELETE, 20 at a time", doc["deleteMs"]["parallel20"]),
    ]
    print(f"\n{'measure (ms)':<32}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for label, p in rows:
        print(f"{label:<32}{p['n']:>6}{p['p50']:>9}{p['p90']:>9}{p['p99']:>9}{p['max']:>9}")
    print(f"\ncontainers/s at parallelism 20: {put['parallel20']['containersPerSecond']}")
    print(f"agent peak RSS: {doc['agentMemory']['peakRssBytes'] / 2**20:.1f} MiB")
    disk = doc.get("diskQuota")
    if disk:
        cold = disk["putToRunningMs"]
        print(
            f"disk quota on cold creates: p50 {cold['none']['p50']} ms without, "
            f"{cold['ext4-image']['p50']} ms with ext4 images "
            f"(+{disk['overheadP50Ms']} ms, x{disk['ratioP50']})"
        )
    dense = doc["density"]
    if dense:
        each = dense["hostMemoryPerSandboxBytes"] / 2**20
        print(
            f"density: {dense['runningAtOnce']} idle limited sandboxes running at once "
            f"(stopped by {dense['stoppedBy']}; {each:.2f} MiB host memory each; "
            f"{dense['execProbesOk']}/{dense['execProbes']} exec probes ok)"
        )


if __name__ == "__main__":
    sys.exit(main())
