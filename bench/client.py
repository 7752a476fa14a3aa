"""The benchmarks' client: creates Sandboxes and watches them Ready, as a frontend would.

A lean asyncio client (aiohttp, one keep-alive connection pool, one watch per namespace) rather
than the official client in threads: the benchmark shares two cores with what it measures, and
the official client spends several milliseconds of CPU per create and per watch event that the
system under test would otherwise have. Each Sandbox is timed from the moment its create
request is sent to the moment the watch delivers it with Ready=True.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import ssl
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

__all__ = ["ClaimRun", "LeanClient", "floor_round", "run_claims"]

GROUP, VERSION = "tux.io", "v1alpha1"


class LeanClient:
    """The API server of a kubeconfig with a bearer token (what hack/cluster-up.sh writes)."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        user = config["users"][0]["user"]
        if "token" not in user:
            raise SystemExit(f"{kubeconfig}: the benchmark client needs a token user")
        self.server = cluster["server"].rstrip("/")
        self.context = ssl.create_default_context(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
        self.headers = {"Authorization": f"Bearer {user['token']}"}
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> LeanClient:
        self.session = aiohttp.ClientSession(
            headers=self.headers,
            connector=aiohttp.TCPConnector(ssl=self.context, limit=200),
            timeout=aiohttp.ClientTimeout(total=None, sock_read=None),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    def url(self, namespace: str, name: str = "") -> str:
        path = f"{self.server}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/sandboxes"
        return f"{path}/{name}" if name else path

    async def create(self, namespace: str, body: dict[str, Any]) -> None:
        assert self.session is not None
        async with self.session.post(
            self.url(namespace),
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        ) as response:
            if response.status != 201:
                raise SystemExit(f"create failed: {response.status} {await response.text()}")
            await response.read()

    async def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        assert self.session is not None
        async with self.session.patch(
            self.url(namespace, name) + "/status",
            data=json.dumps({"status": status}).encode(),
            headers={"Content-Type": "application/merge-patch+json"},
        ) as response:
            if response.status != 200:
                raise SystemExit(f"status patch failed: {response.status} {await response.text()}")
            await response.read()

    async def wait_pool_ready(self, namespace: str, name: str, replicas: int) -> float:
        """Watch a SandboxPool until its status counts `replicas` made and ready; returns
        the time.time() the watch delivered that (a watch: polling would load the server)."""
        assert self.session is not None
        url = f"{self.server}/apis/{GROUP}/{VERSION}/namespaces/{namespace}/sandboxpools"
        params = {"watch": "1", "fieldSelector": f"metadata.name={name}"}
        while True:
            async with self.session.get(url, params=params) as response:
                async for line in response.content:
                    now = time.time()
                    status = json.loads(line)["object"].get("status") or {}
                    if (
                        status.get("readyReplicas", -1) >= replicas
                        and status.get("replicas", -1) >= replicas
                    ):
                        return now

    async def resource_version(self, namespace: str) -> str:
        assert self.session is not None
        async with self.session.get(self.url(namespace), params={"limit": "1"}) as response:
            listing = await response.json()
        return str(listing["metadata"]["resourceVersion"])


def _ready(body: dict[str, Any]) -> bool:
    conditions = (body.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


class ClaimRun:
    """Sandboxes created in one namespace and the moments the watch saw them Ready."""

    def __init__(self, client: LeanClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.sent: dict[str, float] = {}
        self.answered: dict[str, float] = {}  # when the create call returned
        self.ready_at: dict[str, float] = {}
        self.from_pool: dict[str, str | None] = {}
        self._waiters: dict[str, asyncio.Event] = {}
        self._watch: asyncio.Task[None] | None = None

    async def start(self) -> None:
        version = await self.client.resource_version(self.namespace)
        self._watch = asyncio.create_task(self._follow(version))

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _follow(self, version: str) -> None:
        assert self.client.session is not None
        while True:
            params = {"watch": "1", "resourceVersion": version, "allowWatchBookmarks": "false"}
            async with self.client.session.get(
                self.client.url(self.namespace), params=params
            ) as response:
                async for line in response.content:
                    now = time.time()
                    event = json.loads(line)
                    body = event["object"]
                    version = body["metadata"].get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED") and _ready(body):
                        self._seen(body, now)

    def _seen(self, body: dict[str, Any], now: float) -> None:
        name = body["metadata"]["name"]
        if name in self.ready_at:
            return
        self.ready_at[name] = now
        self.from_pool[name] = (body.get("status") or {}).get("fromPool")
        waiter = self._waiters.get(name)
        if waiter is not None:
            waiter.set()

    async def one(self, name: str, spec: dict[str, Any], timeout: float = 120) -> None:
        """Create one Sandbox and wait until it is Ready."""
        waiter = self._waiters.setdefault(name, asyncio.Event())
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "Sandbox",
            "metadata": {"name": name},
            "spec": spec,
        }
        self.sent[name] = time.time()
        await self.client.create(self.namespace, body)
        self.answered[name] = time.time()
        await asyncio.wait_for(waiter.wait(), timeout)

    async def closed_loop(self, names: Iterable[str], spec: dict[str, Any], parallel: int) -> float:
        """`parallel` clients, each creating its next Sandbox once its last one is Ready.
        Returns the wall time in seconds."""
        queue = list(names)
        started = time.time()

        async def worker() -> None:
            while queue:
                await self.one(queue.pop(0), spec)

        await asyncio.gather(*(worker() for _ in range(parallel)))
        return time.time() - started

    async def open_loop(self, names: Iterable[str], spec: dict[str, Any], clients: int) -> float:
        """Every Sandbox created as fast as `clients` connections allow, without waiting for
        any to be Ready; then wait for all. Returns the wall time in seconds."""
        queue = list(names)
        started = time.time()
        waiters = {n: self._waiters.setdefault(n, asyncio.Event()) for n in queue}

        async def sender() -> None:
            while queue:
                name = queue.pop(0)
                self.sent[name] = time.time()
                await self.client.create(
                    self.namespace,
                    {
                        "apiVersion": f"{GROUP}/{VERSION}",
                        "kind": "Sandbox",
                        "metadata": {"name": name},
                        "spec": spec,
                    },
                )

        await asyncio.gather(*(sender() for _ in range(clients)))
        await asyncio.wait_for(asyncio.gather(*(w.wait() for w in waiters.values())), 300)
        return time.time() - started

    def latencies_ms(self) -> list[float]:
        return [(self.ready_at[n] - t) * 1000 for n, t in self.sent.items()]


# What a Sandbox's status becomes once Ready (the operator's status write, in size and shape).
_READY_STATUS: dict[str, Any] = {
    "phase": "Running",
    "host": "floor",
    "containerName": "floor",
    "template": "busybox",
    "cpuset": "1",
    "observedGeneration": 1,
    "conditions": [
        {
            "type": "Ready",
            "status": "True",
            "reason": "Running",
            "message": "the container runs with its limits in force",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
    ],
}


async def floor_round(
    kubeconfig: Path, namespace: str, count: int, parallel: int
) -> dict[str, Any]:
    """The floor of a claim on this API server: `count` bare creates of a Sandbox, each
    followed by one status patch, `parallel` at a time (closed loop), with no operator.
    Returns the latency of a create plus its patch (ms) and the rate."""
    latencies: list[float] = []
    prefix = f"f{time.time_ns() % 10**8}"
    queue = [f"{prefix}-{i}" for i in range(count)]
    spec = {"template": "busybox"}
    async with LeanClient(kubeconfig) as client:

        async def worker() -> None:
            while queue:
                name = queue.pop(0)
                body = {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "Sandbox",
                    "metadata": {"name": name},
                    "spec": spec,
                }
                started = time.perf_counter()
                await client.create(namespace, body)
                await client.patch_status(namespace, name, _READY_STATUS)
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.time()
        await asyncio.gather(*(worker() for _ in range(parallel)))
        wall = time.time() - started
    ordered = sorted(latencies)
    return {
        "count": count,
        "parallelism": parallel,
        "latencyMs": {
            "p50": round(ordered[len(ordered) // 2], 1),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
            "p99": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1),
        },
        "perSecond": round(count / wall, 1),
    }


def run_claims(
    kubeconfig: Path,
    namespace: str,
    names: list[str],
    spec: dict[str, Any],
    parallel: int,
    closed_loop: bool = True,
) -> tuple[ClaimRun, float]:
    """Create `names` with `spec` in `namespace`, `parallel` at a time (closed loop) or from
    `parallel` connections at once (open loop), watching them Ready; returns the run and its
    wall time in seconds."""

    async def run() -> tuple[ClaimRun, float]:
        async with LeanClient(kubeconfig) as client:
            watched = ClaimRun(client, namespace)
            await watched.start()
            try:
                if closed_loop:
                    return watched, await watched.closed_loop(names, spec, parallel)
                return watched, await watched.open_loop(names, spec, parallel)
            finally:
                await watched.stop()

    return asyncio.run(run())
