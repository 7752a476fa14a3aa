"""Fakes at the operator's two interfaces, as lightkube's tests have them: a Kubernetes API
server and a node agent, each a real HTTP server on loopback that records every request
(method, path, query, headers, JSON body) and answers from a small store, or with an error a
test asks for. The operator's real clients talk to them, so a test asserts the exact requests.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kubernetes
from aiohttp import web

from tests.support import loopback_server
from tuxio.common.timeutil import FixedClock
from tuxio.operator.agents import AgentRegistry
from tuxio.operator.backoff import Backoff
from tuxio.operator.claims import Claims
from tuxio.operator.geo import Locator
from tuxio.operator.host_models import SandboxHostSpec
from tuxio.operator.host_status import Grace
from tuxio.operator.index import ClusterIndex
from tuxio.operator.inventory import Inventories
from tuxio.operator.kube import Kube
from tuxio.operator.launches import Launches
from tuxio.operator.placement import PlacementPolicy
from tuxio.operator.records import HostRecord
from tuxio.operator.scheduling import HostView, load_score

GiB = 2**30
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
AT = "2026-03-01T12:00:00Z"


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any

    @property
    def call(self) -> tuple[str, str]:
        return self.method, self.path


@dataclass
class Recorder:
    """What a fake server was sent, and the errors it is to answer with."""

    url: str = ""
    seen: list[Seen] = field(default_factory=list)
    # (method, path) -> [(status, body), ...], answered in turn before the store answers.
    errors: dict[tuple[str, str], list[tuple[int, Any]]] = field(default_factory=dict)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, predicate: Callable[[], object], timeout: float = 30.0) -> None:
        """Wait until `predicate` holds, looking again as each request arrives."""

        async def wait() -> None:
            while not predicate():
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(wait(), timeout)

    async def record(self, request: web.Request) -> Seen:
        raw = await request.read()
        query: dict[str, list[str]] = {}
        for key, value in request.query.items():
            query.setdefault(key, []).append(value)
        seen = Seen(
            request.method,
            request.path,
            query,
            {k.lower(): v for k, v in request.headers.items()},
            json.loads(raw) if raw else None,
        )
        self.seen.append(seen)
        self.arrived.set()
        return seen

    def fail(self, method: str, path: str, status: int, body: Any = None, times: int = 1) -> None:
        self.errors.setdefault((method, path), []).extend([(status, body)] * times)

    def planned_error(self, seen: Seen) -> web.Response | None:
        queued = self.errors.get(seen.call)
        if not queued:
            return None
        status, body = queued.pop(0)
        return web.json_response(body or {"message": f"failed with {status}"}, status=status)

    def calls(self) -> list[tuple[str, str]]:
        return [s.call for s in self.seen]

    def clear(self) -> None:
        self.seen.clear()


class FakeApiServer(Recorder):
    """The parts of the Kubernetes API the operator writes to: Sandboxes (get, patches of the
    object and its status), SandboxPool status, Secrets."""

    def __init__(self) -> None:
        super().__init__()
        self.sandboxes: dict[str, dict[str, Any]] = {}  # path -> object
        self.secrets: dict[str, dict[str, str]] = {}  # "ns/name" -> data

    async def handle(self, request: web.Request) -> web.Response:
        seen = await self.record(request)
        planned = self.planned_error(seen)
        if planned is not None:
            return planned
        parts = seen.path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and parts[4:5] == ["secrets"]:
            data = self.secrets.get(f"{parts[3]}/{parts[5]}")
            if data is None:
                return web.json_response({"kind": "Status", "message": "not found"}, status=404)
            encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
            return web.json_response(
                {"kind": "Secret", "metadata": {"name": parts[5]}, "data": encoded}
            )
        path = seen.path.removesuffix("/status")
        found = self.sandboxes.get(path)
        if seen.method == "GET":
            if found is None:
                return web.json_response({"kind": "Status", "message": "not found"}, status=404)
            return web.json_response(found)
        return web.json_response(found or {"metadata": {"name": parts[-1]}})


@dataclass
class FakeAgent(Recorder):
    """A node agent: containers by name; a PUT converges (running, the cores "1"), a GET
    answers what it has, a DELETE removes, a list filters by label."""

    containers: dict[str, dict[str, Any]] = field(default_factory=dict)
    templates: tuple[str, ...] = ("busybox",)
    # While set to an Event, a PUT stores its container at once (a listing has it) and
    # answers only once the Event is set: a creation in flight, as a slow agent has it.
    answer_puts: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        seen = await self.record(request)
        planned = self.planned_error(seen)
        if planned is not None:
            return planned
        if seen.path == "/v1/host":
            return web.json_response(host_info(self.templates))
        if seen.path == "/v1/containers":
            wanted = dict(v.split("=", 1) for v in seen.query.get("label", []))
            items = [
                c
                for c in self.containers.values()
                if all(c["labels"].get(k) == v for k, v in wanted.items())
            ]
            return web.json_response({"items": items})
        name = seen.path.rsplit("/", 1)[1]
        if seen.method == "PUT":
            self.containers[name] = container(name, seen.body)
            if self.answer_puts is not None:
                await self.answer_puts.wait()
            return web.json_response(self.containers[name])
        if seen.method == "DELETE":
            return web.json_response({"deleted": self.containers.pop(name, None) is not None})
        if name not in self.containers:
            body = {"reason": "ContainerNotFound", "message": f"no container {name!r}"}
            return web.json_response(body, status=404)
        return web.json_response(self.containers[name])


def host_info(templates: tuple[str, ...] = ("busybox",)) -> dict[str, Any]:
    return {
        "version": "0.1.0",
        "cgroupVersion": 1,
        "apparmor": False,
        "cpus": {"total": 2, "reserved": [0], "shared": [1], "allocation": {"1": 0}},
        "memory": {"totalBytes": 8 * GiB, "availableBytes": 6 * GiB},
        "disk": {
            "path": "/var/lib/tuxio/containers",
            "backend": "ext4-image",
            "totalBytes": 100 * GiB,
            "freeBytes": 60 * GiB,
            "totalInodes": 6_000_000,
            "freeInodes": 5_000_000,
            "reserveBytes": 2 * GiB,
            "reserveInodes": 100_000,
            "defaultBytes": GiB,
            "defaultInodes": 65536,
            "allocatedBytes": 0,
            "belowReserve": False,
        },
        "templates": [
            {"name": t, "builtAt": "2026-01-01T00:00:00Z", "sizeBytes": 1, "init": ["/sbin/init"]}
            for t in templates
        ],
        "containers": 0,
        "running": 0,
        "load": [0.5, 0.4, 0.3],
    }


def container(
    name: str,
    spec: dict[str, Any],
    state: str = "running",
    created: str = "2026-01-01T00:00:00Z",
    spec_hash: str | None = None,
) -> dict[str, Any]:
    """The agent's answer for a container converged to `spec` (a ContainerSpec as JSON)."""
    running = state == "running"
    return {
        "name": name,
        "state": state,
        "pid": 4242 if running else None,
        "template": spec.get("template", "busybox"),
        "labels": spec.get("labels") or {},
        "specHash": spec_hash or f"hash-of-{name}",
        "spec": spec,
        "createdAt": created,
        "startedAt": "2026-03-01T11:59:59Z" if running else None,
        "limits": {
            "cpuset": "1",
            "cpus": 1,
            "cpuQuota": None,
            "memory": 256 * 2**20,
            "memorySwap": 256 * 2**20,
            "pids": 256,
            "nofile": 1024,
            "nproc": 512,
        }
        if running
        else None,
        "burst": None,
        "usage": {"cpuSeconds": 1.5, "memoryBytes": 1000, "memoryPeakBytes": 2000, "pids": 3}
        if running
        else None,
        "warnings": [],
    }


@dataclass
class Events:
    """An EventSink that remembers: (type, reason, message, object name)."""

    posted: list[tuple[str, str, str, str]] = field(default_factory=list)

    def normal(self, body: Any, reason: str, message: str) -> None:
        self.posted.append(("Normal", str(reason), message, body["metadata"]["name"]))

    def warning(self, body: Any, reason: str, message: str) -> None:
        self.posted.append(("Warning", str(reason), message, body["metadata"]["name"]))


def host_record(
    name: str,
    endpoint: str,
    ready: bool = True,
    heartbeat: str | None = None,
    not_ready_since: str | None = None,
    **view: Any,
) -> HostRecord:
    spec = SandboxHostSpec.model_validate(
        {
            "endpoint": endpoint,
            "credentialsSecretRef": {"name": "agent", "namespace": "tuxio-system"},
        }
    )
    fields: dict[str, Any] = {
        "name": name,
        "ready": ready,
        "unschedulable": False,
        "templates": frozenset({"busybox"}),
        "shared_cpus": 1,
        "memory_bytes": 8 * GiB,
        **view,
    }
    return HostRecord(name, spec, HostView(**fields), heartbeat, not_ready_since)


@dataclass
class World:
    """An API server, an agent, and the operator's shared parts wired to them."""

    api: FakeApiServer
    agent: FakeAgent
    kube: Kube
    agents: AgentRegistry
    clock: FixedClock
    index: ClusterIndex
    inventories: Inventories
    claims: Claims
    policy: PlacementPolicy
    events: Events
    backoff: Backoff = field(default_factory=lambda: Backoff(first=2.0))
    grace: Grace = field(default_factory=lambda: Grace(15.0, 60.0))
    launches: Launches = field(init=False)

    def __post_init__(self) -> None:
        self.launches = Launches(self.clock.monotonic, self.clock.now)

    def add_host(self, name: str = "h1", **view: Any) -> HostRecord:
        record = host_record(name, self.agent.url, **view)
        self.index.set_host(record)
        return record


async def world() -> AsyncIterator[World]:
    """A World for one test: both servers up, the agent's token in the API's Secret."""
    api, agent = FakeApiServer(), FakeAgent()
    async with loopback_server(api.handle) as api_url, loopback_server(agent.handle) as agent_url:
        api.url, agent.url = api_url, agent_url
        api.secrets["tuxio-system/agent"] = {"token": "agent-token-0123456789"}
        configuration = kubernetes.client.Configuration(host=api_url)
        configuration.api_key["BearerToken"] = "Bearer admin"
        kube = Kube(kubernetes.client.ApiClient(configuration))
        clock = FixedClock(NOW, 1000.0)
        index = ClusterIndex(clock.monotonic)
        agents = AgentRegistry(kube.read_secret, 5.0, allow_loopback_plaintext=True)
        found = World(
            api=api,
            agent=agent,
            kube=kube,
            agents=agents,
            clock=clock,
            index=index,
            inventories=Inventories(),
            claims=Claims(index.sandboxes, clock.monotonic),
            policy=PlacementPolicy(load_score, 2.0, Locator(None)),
            events=Events(),
        )
        try:
            yield found
        finally:
            await agents.close()
            await kube.close()


def sandbox(
    name: str = "s1",
    uid: str = "uid-1",
    spec: dict[str, Any] | None = None,
    status: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
    finalizers: list[str] | None = None,
    generation: int = 1,
) -> dict[str, Any]:
    """A Sandbox as the watch delivers it."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": "ns",
        "uid": uid,
        "generation": generation,
        "resourceVersion": "7",
        "creationTimestamp": "2026-03-01T11:59:00Z",
    }
    if annotations:
        meta["annotations"] = annotations
    if finalizers:
        meta["finalizers"] = finalizers
    return {
        "apiVersion": "tux.io/v1alpha1",
        "kind": "Sandbox",
        "metadata": meta,
        "spec": spec or {"template": "busybox"},
        "status": status or {},
    }


SANDBOX_PATH = "/apis/tux.io/v1alpha1/namespaces/ns/sandboxes"
