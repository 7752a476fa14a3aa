#!/usr/bin/env python3
"""Benchmark: how long a scrape of the agent's /metrics takes with many sandboxes on the host.

A real agent on real LXC: `--sandboxes` (1000) busybox sandboxes with limits are started, then
/metrics is scraped `--scrapes` times, one after another, as Prometheus would (a new HTTP
request each, the whole body read). Nothing is cached between scrapes: every one reads each
running container's cgroup files (tuxio.nodeagent.sandbox_collector). The target is a p99 of
at most 50 ms at 1000 sandboxes. Also recorded: the series in one scrape, the body's size, and
the agent's CPU time per scrape.

Writes bench/results/metrics.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from agent_bench import AGENT, DENSE_SPEC, create_many, delete_many, meminfo, percentiles
from stack import cpu_seconds, free_port, speed_probe


def scrape_series(body: str) -> dict[str, int]:
    """Samples per metric family name of interest in one scrape."""
    counts: dict[str, int] = {}
    for line in body.splitlines():
        if line.startswith("tuxio_agent_sandbox_"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            counts[name] = counts.get(name, 0) + 1
    return counts


def scrape(url: str, times: int, agent_pid: int) -> dict[str, Any]:
    latencies: list[float] = []
    body = ""
    cpu_before = cpu_seconds(agent_pid)
    with httpx.Client(timeout=30) as client:
        client.get(url).raise_for_status()  # the first scrape: imports and page cache
        cpu_before = cpu_seconds(agent_pid)
        for _ in range(times):
            started = time.perf_counter()
            response = client.get(url, headers={"Connection": "close"})
            body = response.text
            latencies.append((time.perf_counter() - started) * 1000)
            response.raise_for_status()
    cpu_after = cpu_seconds(agent_pid)
    return {
        "scrapeMs": percentiles(latencies),
        "agentCpuMsPerScrape": round((cpu_after - cpu_before) * 1000 / times, 2),
        "bodyBytes": len(body.encode()),
        "seriesPerFamily": scrape_series(body),
    }


async def fill(url: str, token: str, count: int, parallel: int) -> list[str]:
    names = [f"m-{i}" for i in range(count)]
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300
    ) as client:
        for start in range(0, count, 50):
            await create_many(client, names[start : start + 50], parallel, DENSE_SPEC)
    return names


async def empty(url: str, token: str, names: list[str]) -> None:
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=300
    ) as client:
        await delete_many(client, names, 8)


def wait_ready(url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(log.read_text())
        time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/metrics.json"))
    parser.add_argument("--sandboxes", type=int, default=1000)
    parser.add_argument("--scrapes", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=4, help="sandboxes started at once")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="tuxio-bench-metrics-", dir="/var/tmp"))
    agent = None
    speed_before = speed_probe()
    try:
        for argv in (
            ["template", "build", "busybox"],
            ["token", "generate", "--out", str(data_dir / "token")],
        ):
            subprocess.run([AGENT, "--data-dir", str(data_dir), *argv], check=True)
        port, metrics_port = free_port(), free_port()
        log = data_dir / "agent.log"
        env = {**os.environ, "TUXIO_AGENT_METRICS_PORT": str(metrics_port)}
        with log.open("wb") as out:
            agent = subprocess.Popen(
                [
                    *(AGENT, "--data-dir", str(data_dir), "serve", "--port", str(port)),
                    *("--token-file", str(data_dir / "token")),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, log)
        token = (data_dir / "token").read_text().strip()
        started = time.perf_counter()
        names = asyncio.run(fill(url, token, args.sandboxes, args.parallel))
        fill_seconds = time.perf_counter() - started
        result = scrape(f"http://127.0.0.1:{metrics_port}/metrics", args.scrapes, agent.pid)
        asyncio.run(empty(url, token, names))
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=60)
        lxcpath = data_dir / "containers"
        if lxcpath.is_dir():
            for entry in lxcpath.iterdir():
                subprocess.run(
                    ["lxc-destroy", "-P", str(lxcpath), "-n", entry.name, "-f"],
                    capture_output=True,
                    check=False,
                )
        shutil.rmtree(data_dir, ignore_errors=True)

    document = {
        "benchmark": "a scrape of the agent's /metrics with many running sandboxes (real agent, "
        "real LXC, no cache)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "memoryBytes": meminfo()["MemTotal"],
            "kernel": platform.release(),
            "cgroup": "v2" if Path("/sys/fs/cgroup/cgroup.controllers").exists() else "v1 (hybrid)",
            "speedProbeMs": {"before": speed_before, "after": speed_probe()},
        },
        "sandboxes": args.sandboxes,
        "spec": DENSE_SPEC,
        "secondsToStart": round(fill_seconds, 1),
        "scrapes": args.scrapes,
        "target": {"sandboxes": 1000, "scrapeP99Ms": 50},
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    scrape_ms = document["scrapeMs"]
    print(
        f"{args.sandboxes} sandboxes: scrape p50 {scrape_ms['p50']} ms, p99 {scrape_ms['p99']} ms, "
        f"max {scrape_ms['max']} ms; {document['bodyBytes']} bytes; "
        f"agent CPU {document['agentCpuMsPerScrape']} ms per scrape"
    )
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
