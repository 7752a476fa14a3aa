#!/usr/bin/env python3
"""Benchmark: what one host probe costs with 1000 sandboxes on the host.

The real API server, operator, agent and LXC: `--sandboxes` (1000) Sandboxes are created and run
on one host, every one of them due for a usage write at every probe (usage_write_seconds equal
to probe_interval_seconds: the worst case). Then the requests of whole probes are counted:

- at the API server, from its own `apiserver_request_total` counters (group tux.io, by verb,
  resource and subresource), so the count does not depend on which client the operator uses;
- at the agent, through a counting proxy that the SandboxHost's endpoint points at (each
  probe starts with one `GET /v1/host`, which marks the probes apart).

Writes bench/results/probe.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import json
import os
import platform
import re
import ssl
import sys
import threading
import time
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from stack import Stack, free_port, speed_probe

from client import run_claims

SPEC = {"template": "busybox", "resources": {"cpus": 1, "memory": "32Mi", "pids": 32}}
PROBE_SECONDS = 5
METRIC = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>[0-9.e+]+)$")
LABEL = re.compile(r'(\w+)="([^"]*)"')


class CountingProxy:
    """Forwards every request to the agent and counts them by method and route, in a thread
    of its own (its own event loop), so the benchmark's waiting does not hold it up."""

    def __init__(self, agent_port: int) -> None:
        self.agent = f"http://127.0.0.1:{agent_port}"
        self.port = free_port()
        self.counts: collections.Counter[str] = collections.Counter()
        self.probes: list[float] = []  # when each GET /v1/host came in
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        app = web.Application(client_max_size=64 * 2**20)

        async def forward(request: web.Request) -> web.Response:
            route = request.path
            if route.startswith("/v1/containers/"):
                route = "/v1/containers/{name}"
            self.counts[f"{request.method} {route}"] += 1
            if route == "/v1/host":
                self.probes.append(time.time())
            async with session.request(
                request.method,
                self.agent + request.path_qs,
                data=await request.read(),
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
            ) as answer:
                body = await answer.read()
                headers = {
                    k: v
                    for k, v in answer.headers.items()
                    if k.lower() not in ("content-length", "transfer-encoding", "connection")
                }
                return web.Response(status=answer.status, body=body, headers=headers)

        app.router.add_route("*", "/{tail:.*}", forward)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._ready.set()
        await asyncio.Event().wait()


def api_counts(kubeconfig: Path) -> collections.Counter[str]:
    """The API server's own request counters for tux.io objects, by verb/resource/subresource."""
    config = yaml.safe_load(kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    context = ssl.create_default_context(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    request = urllib.request.Request(
        cluster["server"].rstrip("/") + "/metrics",
        headers={"Authorization": f"Bearer {user['token']}"},
    )
    with urllib.request.urlopen(request, context=context, timeout=30) as answer:
        text = answer.read().decode()
    counts: collections.Counter[str] = collections.Counter()
    for line in text.splitlines():
        found = METRIC.match(line)
        if not found:
            continue
        labels = dict(LABEL.findall(found["labels"]))
        if labels.get("group") != "tux.io" or labels.get("verb") in ("WATCH", "LIST"):
            continue
        key = f"{labels['verb']} {labels['resource']}"
        if labels.get("subresource"):
            key += f"/{labels['subresource']}"
        counts[key] += int(float(found["value"]))
    return counts


def wait_probes(proxy: CountingProxy, count: int, timeout: float) -> None:
    seen = len(proxy.probes)
    deadline = time.time() + timeout
    while len(proxy.probes) < seen + count:
        if time.time() > deadline:
            raise SystemExit(f"fewer than {count} probes in {timeout:.0f}s")
        time.sleep(0.05)


def measure(stack: Stack, proxy: CountingProxy, probes: int) -> dict[str, Any]:
    """Requests per probe over `probes` whole probes (from one GET /v1/host to the next)."""
    wait_probes(proxy, 1, 600)
    api_before, agent_before = api_counts(stack.kubeconfig), collections.Counter(proxy.counts)
    started = proxy.probes[-1]
    wait_probes(proxy, probes, 600 * probes)
    api_after, agent_after = api_counts(stack.kubeconfig), collections.Counter(proxy.counts)
    window = proxy.probes[-1] - started
    return {
        "probes": probes,
        "apiRequestsPerProbe": {
            k: round((api_after[k] - api_before[k]) / probes, 1)
            for k in sorted(api_after)
            if api_after[k] != api_before[k]
        },
        "agentRequestsPerProbe": {
            k: round((agent_after[k] - agent_before[k]) / probes, 1)
            for k in sorted(agent_after)
            if agent_after[k] != agent_before[k]
        },
        # kopf's timer waits its interval after a probe ends: what is beyond it is the probe.
        "probeSeconds": round(max(0.0, window / probes - PROBE_SECONDS), 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/probe.json"))
    parser.add_argument("--sandboxes", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=3)
    args = parser.parse_args()
    probe_before = speed_probe()
    agent_port = free_port()
    proxy = CountingProxy(agent_port)
    proxy.start()
    env = {
        "TUXIO_OPERATOR_PROBE_INTERVAL_SECONDS": str(PROBE_SECONDS),
        "TUXIO_OPERATOR_USAGE_WRITE_SECONDS": str(PROBE_SECONDS),  # every sandbox due each probe
        "TUXIO_OPERATOR_NOT_READY_AFTER_SECONDS": "600",  # a slow probe must not look like a loss
    }
    with Stack(agent_port=agent_port, operator_env=env, host_endpoint=proxy.url) as stack:
        namespace = f"probe-bench-{uuid.uuid4().hex[:6]}"
        stack.kubectl("create", "namespace", namespace)
        names = [f"p{i}" for i in range(args.sandboxes)]
        print(f"creating {len(names)} sandboxes", flush=True)
        _, wall = run_claims(stack.kubeconfig, namespace, names, SPEC, 20, closed_loop=False)
        print(f"all Running after {wall:.1f}s; counting {args.probes} probes", flush=True)
        result = measure(stack, proxy, args.probes)
        stack.kubectl("delete", "sandboxes", "--all", "-n", namespace, "--timeout=900s")
        stack.kubectl("delete", "namespace", namespace, "--wait=false")
    document = {
        "benchmark": "one host probe with many sandboxes on the host: requests per probe "
        "(real API server, operator, agent and LXC)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "speedProbeMs": {"before": probe_before, "after": speed_probe()},
        },
        "sandboxes": args.sandboxes,
        "spec": SPEC,
        "usageWriteSeconds": PROBE_SECONDS,
        **result,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
