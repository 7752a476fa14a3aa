#!/usr/bin/env python3
"""Chaos: a churn of sandboxes while the operator, the agent, a gateway replica, kube-apiserver
and etcd are killed with SIGKILL at random (seeded) moments, each restarted at once as its
supervisor would (kubelet for the pods, hack/cluster-up.sh for the control plane).

The stack is the real one on this machine: a control plane of the run's own (etcd,
kube-apiserver and kube-controller-manager started by hack/cluster-up.sh in a directory and
on ports of its own, removed at the end; `--shared-control-plane` takes TUXIO_CLUSTER_DIR's
instead), the CRDs and the manifests' RBAC, the operator under its ServiceAccount, one agent
over TLS on real LXC, two gateway replicas behind the aggregated API.

The churn: `--sandboxes` Sandboxes are created by a few workers, cold ones, Stopped ones and
claims from two SandboxPools; each is awaited in the phase its spec asks for (with patience:
the control plane may be down), a terminal is opened on some through the API server and the
gateway, and the oldest are deleted so that a handful stay alive. Meanwhile the pools are
scaled up and down. The kills come at random points of the churn (the number of Sandboxes
created so far, drawn from the seed); every kind is killed at least once.

Afterwards, within 30 s of the last kill (or of the churn's end, whichever is later), the end
state must hold (bench/chaos_audit.py): every Sandbox in the phase its spec asks for, no
container adopted twice, nothing on the agent's host that no Sandbox or pool wants (LXC
containers, their directories, mounts), each pool at its replicas, and the pools' creations
counted on the agent's side equal to what they needed.

    .venv/bin/python bench/chaos.py --sandboxes 200 --kills 10 --out bench/results/chaos.json

tests/e2e/test_chaos.py runs a short version in `make test`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import httpx
import kubernetes
import urllib3
import yaml
from websockets.exceptions import WebSocketException

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.chaos_audit import History, HostView, audit
from tests.e2e.conftest import (
    GROUP,
    RBAC,
    ROOT,
    RUN_DIR,
    SYSTEM_NS,
    VERSION,
    Cluster,
    Host,
    Operator,
    forbidden_lines,
    service_account_token,
    token_kubeconfig,
)
from tests.e2e.test_gateway import API, V5, Gateway, Replica, agent_over_tls, running_gateway
from tests.support import free_port, wait_until
from tests.wsclient import connect

__all__ = ["KINDS", "ChaosPlan", "ChaosReport", "ControlPlane", "chaos", "own_control_plane"]

# What is killed: each at least once per run.
KINDS = ("operator", "agent", "gateway", "kube-apiserver", "etcd")
NAMESPACE = "chaos"
POOLS = ("warm-a", "warm-b")
# The end state must hold this long after the last kill.
CONVERGENCE_SECONDS = 30.0
# The operator's timings: the e2e tier's, but a host turns NotReady and its sandboxes Lost
# only after the deployment's defaults, far longer than any restart here takes (a Lost
# Sandbox is the designed answer to a host gone for a minute, not to a restart).
OPERATOR_ENV = {
    "TUXIO_OPERATOR_NOT_READY_AFTER_SECONDS": "15",
    "TUXIO_OPERATOR_LOST_AFTER_SECONDS": "60",
    "TUXIO_OPERATOR_LEDGER_URL": f"sqlite:///{RUN_DIR}/chaos-ledger.sqlite3",
}
RESOURCES = {"cpus": 1, "memory": "64Mi", "pids": 64}

T = TypeVar("T")


def log(message: str) -> None:
    print(f"chaos {datetime.now(UTC):%H:%M:%S} {message}", flush=True)


# ----- the control plane ----------------------------------------------------------------------


@dataclass
class ControlPlane:
    """A control plane of hack/cluster-up.sh: its state directory and the settings (the
    TUXIO_* variables of hack/lib/cluster-env.sh) its scripts run with."""

    directory: Path
    env: dict[str, str]
    own: bool  # made for this run: removed by down()

    def _run(self, script: str) -> None:
        done = subprocess.run(
            [str(ROOT / "hack" / script)],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"hack/{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )

    def up(self) -> Cluster:
        """Start what is not running (hack/cluster-up.sh is idempotent) and wait until ready."""
        self._run("cluster-up.sh")
        built = subprocess.run(
            [str(ROOT / "hack" / "build-control-plane.sh")],
            capture_output=True,
            text=True,
            check=True,
        )
        kubectl = Path(built.stdout.strip().splitlines()[-1]) / "kubectl"
        kubeconfig = self.directory / "kubeconfig"
        return Cluster(kubeconfig, kubectl, {"KUBECONFIG": str(kubeconfig), **self.env})

    def pid(self, name: str) -> int:
        return int((self.directory / "run" / f"{name}.pid").read_text().strip())

    def kill(self, name: str) -> None:
        pid = self.pid(name)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}/cmdline").exists() or _zombie(pid), timeout=30)

    def down(self) -> None:
        if self.own:
            self._run("cluster-down.sh")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def own_control_plane() -> ControlPlane:
    """A control plane apart from every other on the machine: a fresh directory, free ports."""
    directory = Path(f"/var/tmp/tuxio-cluster-chaos-{uuid.uuid4().hex[:6]}")
    env = {
        "TUXIO_CLUSTER_DIR": str(directory),
        "TUXIO_APISERVER_PORT": str(free_port()),
        "TUXIO_ETCD_CLIENT_PORT": str(free_port()),
        "TUXIO_ETCD_PEER_PORT": str(free_port()),
        "TUXIO_KCM_PORT": str(free_port()),
    }
    return ControlPlane(directory, env, own=True)


def shared_control_plane() -> ControlPlane:
    keys = (
        "TUXIO_CLUSTER_DIR",
        "TUXIO_APISERVER_PORT",
        "TUXIO_ETCD_CLIENT_PORT",
        "TUXIO_ETCD_PEER_PORT",
        "TUXIO_KCM_PORT",
    )
    env = {k: os.environ[k] for k in keys if k in os.environ}
    return ControlPlane(Path(env.get("TUXIO_CLUSTER_DIR", "/var/tmp/tuxio-cluster")), env, False)


# ----- the plan and the report ----------------------------------------------------------------


@dataclass(frozen=True)
class ChaosPlan:
    sandboxes: int = 200
    kills: int = 10
    seed: int = 0
    workers: int = 4
    live: int = 8  # Sandboxes kept alive at once (the oldest beyond are deleted)
    max_replicas: int = 4
    terminal_share: float = 0.3  # of the Running Sandboxes, those a terminal is opened on
    phase_patience: float = 180.0  # how long a worker waits for a Sandbox's phase

    def schedule(self) -> list[tuple[int, str]]:
        """(Sandboxes created so far, what to kill then), from the seed: every kind once,
        the rest drawn at random; a gateway kill names its replica."""
        rng = random.Random(self.seed)
        kinds = list(KINDS) + [rng.choice(KINDS) for _ in range(max(0, self.kills - len(KINDS)))]
        rng.shuffle(kinds)
        low, high = max(1, self.sandboxes // 10), max(2, self.sandboxes - self.sandboxes // 10)
        points = sorted(rng.sample(range(low, high), len(kinds)))
        named = [f"gateway/{rng.choice('ab')}" if k == "gateway" else k for k in kinds]
        return list(zip(points, named, strict=True))


@dataclass
class ChaosReport:
    seed: int
    plan: dict[str, Any]
    kills: list[dict[str, Any]] = field(default_factory=list)
    churn: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    converged_seconds: float | None = None  # after the last kill (or the churn's end)
    deadline_from: str = ""

    @property
    def killed(self) -> set[str]:
        return {str(k["target"]).split("/")[0] for k in self.kills}


# ----- calls that ride out a dead API server --------------------------------------------------


def retrying(call: Callable[[], T], patience: float = 240.0) -> T:
    """`call` until it is answered: a refused connection, a timeout or a 5xx (the API server
    or etcd being restarted, a webhook unreachable) is tried again. Other answers raise."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return call()
        except kubernetes.client.exceptions.ApiException as exc:
            if exc.status not in (0, 429, 500, 502, 503, 504) or time.monotonic() > deadline:
                raise
        except (urllib3.exceptions.HTTPError, httpx.HTTPError, OSError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.3)


class Kube:
    """The admin's view of the cluster (the static token of hack/cluster-up.sh)."""

    def __init__(self, cluster: Cluster) -> None:
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            config_file=str(cluster.kubeconfig), client_configuration=configuration
        )
        configuration.connection_pool_maxsize = 32
        configuration.retries = False
        self.api = kubernetes.client.ApiClient(configuration)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        self.core = kubernetes.client.CoreV1Api(self.api)
        config = yaml.safe_load(cluster.kubeconfig.read_text())
        self.token = str(config["users"][0]["user"]["token"])
        self.server = str(config["clusters"][0]["cluster"]["server"])
        ca = config["clusters"][0]["cluster"]["certificate-authority-data"]
        self.ssl = ssl.create_default_context(cadata=base64.b64decode(ca).decode())

    def create(self, plural: str, body: dict[str, Any]) -> dict[str, Any]:
        def once() -> dict[str, Any]:
            try:
                made: dict[str, Any] = self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, plural, body, _request_timeout=15
                )
                return made
            except kubernetes.client.exceptions.ApiException as exc:
                if exc.status == 409:  # an earlier try was stored before its answer was lost
                    return self.get(plural, body["metadata"]["name"]) or {}
                raise

        return retrying(once)

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        def once() -> dict[str, Any] | None:
            try:
                found: dict[str, Any] = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, plural, name, _request_timeout=10
                )
                return found
            except kubernetes.client.exceptions.ApiException as exc:
                if exc.status == 404:
                    return None
                raise

        return retrying(once)

    def delete(self, plural: str, name: str) -> None:
        def once() -> None:
            try:
                self.custom.delete_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, plural, name, _request_timeout=15
                )
            except kubernetes.client.exceptions.ApiException as exc:
                if exc.status != 404:
                    raise

        retrying(once)

    def scale(self, pool: str, replicas: int) -> int:
        """Set the pool's replicas; returns the generation that made."""
        scaled: dict[str, Any] = retrying(
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP,
                VERSION,
                NAMESPACE,
                "sandboxpools",
                pool,
                {"spec": {"replicas": replicas}},
                _request_timeout=15,
            )
        )
        return int(scaled["metadata"]["generation"])

    def observed(self, pool: str, generation: int, patience: float = 240.0) -> float:
        """Wait until the pool's status shows the operator has seen `generation` (or a later
        one); returns the wall-clock time that was first read. Its watch may lag by as long
        as the API server takes to come back, and the operator may be restarted meanwhile."""
        deadline = time.monotonic() + patience
        while True:
            found = self.get("sandboxpools", pool) or {}
            if int((found.get("status") or {}).get("observedGeneration") or 0) >= generation:
                return time.time()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"pool {pool} did not observe generation {generation} in {patience:.0f} s"
                )
            time.sleep(0.05)

    def items(self, plural: str) -> list[dict[str, Any]]:
        listed = retrying(
            lambda: self.custom.list_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, plural, _request_timeout=15
            )
        )
        return list(listed["items"])


# ----- the churn ------------------------------------------------------------------------------


def sandbox_body(name: str, kind: str) -> dict[str, Any]:
    spec: dict[str, Any]
    if kind in POOLS:
        spec = {"poolRef": {"name": kind}}
    else:
        spec = {"template": "busybox", "resources": RESOURCES}
        if kind == "stopped":
            spec["state"] = "Stopped"
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Sandbox",
        "metadata": {"name": name},
        "spec": spec,
    }


def pool_body(name: str, replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SandboxPool",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "template": "busybox",
            "resources": RESOURCES,
            "placement": {"spread": "None"},
        },
    }


@dataclass
class Churn:
    kube: Kube
    plan: ChaosPlan
    history: History
    pool_uids: dict[str, str]
    replicas: dict[str, int]
    lock: threading.Lock = field(default_factory=threading.Lock)
    created: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    live: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    # Sandboxes that did not reach their phase in a worker's patience (deleted since,
    # maybe, but stuck then: the end state alone would not show them).
    stuck: list[str] = field(default_factory=list)
    # Threads of the run that died of an exception (each named, with its error): the run
    # stops early and says so rather than a dead thread hiding behind a half-done churn.
    failures: list[str] = field(default_factory=list)

    def guarded(self, name: str, body: Callable[[], None]) -> Callable[[], None]:
        """`body` for a thread: an exception is recorded in `failures` and ends the churn."""

        def run() -> None:
            try:
                body()
            except Exception as exc:  # recorded, then the churn stops
                with self.lock:
                    self.failures.append(f"the {name} thread died: {type(exc).__name__}: {exc}")
                self.done.set()

        return run

    def note(self, key: str, n: int = 1) -> None:
        with self.lock:
            self.counts[key] += n

    def seen(self, body: dict[str, Any] | None) -> None:
        """Remember the container a Sandbox names (a claim shows here, if nowhere else)."""
        if not body:
            return
        status = body.get("status") or {}
        named = status.get("containerName")
        annotation = ((body.get("metadata") or {}).get("annotations") or {}).get(
            "tux.io/assignment"
        )
        if annotation:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                named = named or json.loads(annotation).get("containerName")
        if named:
            with self.lock:
                self.history.claimed_seen.add(str(named))

    def worker(self, index: int) -> None:
        rng = random.Random(self.plan.seed * 1000 + index)
        while not self.done.is_set():
            with self.lock:
                if self.created >= self.plan.sandboxes:
                    return
                self.created += 1
                number = self.created
            kind = rng.choices([*POOLS, "cold", "stopped"], weights=[3, 2, 3, 1])[0]
            name = f"s{number:04d}"
            self.kube.create("sandboxes", sandbox_body(name, kind))
            self.note(f"created-{kind}")
            want = "Stopped" if kind == "stopped" else "Running"
            body = self.wait_phase(name, want)
            self.seen(body)
            if body is None:
                self.note("phase-not-reached-in-patience")
                with self.lock:
                    self.stuck.append(
                        f"{name} did not turn {want} within {self.plan.phase_patience:.0f} s"
                    )
            elif want == "Running" and rng.random() < self.plan.terminal_share:
                self.note("terminal-ok" if self.terminal(name, rng) else "terminal-failed")
            with self.lock:
                self.live.append(name)
                victims = []
                while len(self.live) > self.plan.live:
                    victims.append(self.live.pop(rng.randrange(len(self.live))))
            for victim in victims:
                self.seen(self.kube.get("sandboxes", victim))
                self.kube.delete("sandboxes", victim)
                self.note("deleted")

    def wait_phase(self, name: str, phase: str) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.plan.phase_patience
        while time.monotonic() < deadline and not self.done.is_set():
            body = self.kube.get("sandboxes", name)
            self.seen(body)
            if body and (body.get("status") or {}).get("phase") == phase:
                return body
            time.sleep(0.2)
        return None

    def terminal(self, name: str, rng: random.Random) -> bool:
        """A terminal through the API server and a gateway replica: a command's answer seen."""
        server = self.kube.server.replace("https://", "wss://")
        query = urlencode([("session", uuid.uuid4().hex)])
        marker = rng.randrange(1000, 9999)
        try:
            with connect(
                f"{server}{API}/namespaces/{NAMESPACE}/sandboxes/{name}/terminal?{query}",
                additional_headers={"Authorization": f"Bearer {self.kube.token}"},
                subprotocols=[V5],  # type: ignore[list-item]
                ssl=self.kube.ssl,
                open_timeout=20,
                compression=None,
                proxy=None,
            ) as ws:
                ws.send(b"\x00echo chaos-$((" + str(marker).encode() + b"+1))\r")
                seen = b""
                wanted = f"chaos-{marker + 1}".encode()
                deadline = time.monotonic() + 30
                while wanted not in seen and time.monotonic() < deadline:
                    frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
                    if isinstance(frame, bytes) and frame[:1] == b"\x01":
                        seen += frame[1:]
                ws.send(b"\x00exit\r")
                return wanted in seen
        except (WebSocketException, OSError, TimeoutError):
            return False

    def scaler(self) -> None:
        rng = random.Random(self.plan.seed * 1000 + 999)
        while not self.done.wait(rng.uniform(1.0, 4.0)):
            pool = rng.choice(POOLS)
            replicas = rng.randint(0, self.plan.max_replicas)
            asked = time.time()
            generation = self.kube.scale(pool, replicas)
            with self.lock:
                before, self.replicas[pool] = self.replicas[pool], replicas
            if replicas < before:
                # The operator may make containers for the replicas before until it has seen
                # these: the audit counts them up to then, however long its watch lagged.
                observed = self.kube.observed(pool, generation)
                with self.lock:
                    self.history.scale_downs.append(
                        (self.pool_uids[pool], asked, observed, before, replicas)
                    )
            self.note("scaled")


# ----- the kills ------------------------------------------------------------------------------


@dataclass
class Targets:
    plane: ControlPlane
    operator: Operator
    host: Host
    gateway: Gateway
    # Spans of the operator's log (byte offsets) written while the API server was starting.
    excused: list[tuple[int, int]] = field(default_factory=list)
    # A restart of the control plane that failed and was tried again (with why).
    restart_failures: list[str] = field(default_factory=list)

    def replica(self, name: str) -> Replica:
        return self.gateway.replicas["ab".index(name)]

    def restart_plane(self, target: str, tries: int = 3) -> None:
        """hack/cluster-up.sh until it succeeds, `tries` at most, as a supervisor restarts a
        failed start; each failure is logged with the script's output (and kept in
        `restart_failures` for the report), the last one raised."""
        for attempt in range(1, tries + 1):
            try:
                self.plane.up()
                return
            except RuntimeError as exc:
                log(f"restart {attempt} of {target} failed: {exc}")
                self.restart_failures.append(f"{target}, try {attempt}: {exc}")
                if attempt == tries:
                    raise

    def kill_and_restart(self, target: str) -> float:
        """SIGKILL `target`, then start it again as its supervisor would; the seconds the
        restart took (until it answered its health check again)."""
        kind, _, which = target.partition("/")
        if kind == "operator":
            self.operator.stop(signal.SIGKILL)
        elif kind == "agent":
            self.host.agent.stop(signal.SIGKILL)
        elif kind == "gateway":
            self.replica(which).stop(signal.SIGKILL)
        else:
            # Until it is ready, a starting API server denies what its RBAC cache has not
            # loaded yet: those 403s are excused from the RBAC checks of the logs.
            spans = [(self.operator.log, self.excused)]
            spans += [(r.log, r.excused) for r in self.gateway.replicas]
            before = [(excused, path.stat().st_size) for path, excused in spans]
            self.plane.kill(kind)
        began = time.monotonic()
        if kind == "operator":
            self.operator.start()
        elif kind == "agent":
            self.host.agent.start()
        elif kind == "gateway":
            self.replica(which).start()
        else:
            self.restart_plane(target)
            for (excused, start), (path, _) in zip(before, spans, strict=True):
                excused.append((start, path.stat().st_size))
        return round(time.monotonic() - began, 2)


def killer(churn: Churn, targets: Targets, report: ChaosReport, started: float) -> float:
    """Each kill of the schedule when the churn has created that many Sandboxes; the
    monotonic time of the last kill."""
    last = started
    for point, target in churn.plan.schedule():
        while churn.created < point and not churn.done.is_set():
            time.sleep(0.05)
        if churn.failures:  # the churn died: no more kills, the report says why
            break
        last = time.monotonic()
        log(f"SIGKILL {target} at sandbox {churn.created}")
        restart = targets.kill_and_restart(target)
        report.kills.append(
            {
                "target": target,
                "atSandbox": churn.created,
                "atSeconds": round(last - started, 2),
                "restartSeconds": restart,
            }
        )
    return last


# ----- the end state --------------------------------------------------------------------------


def host_view(host: Host) -> HostView:
    agent = host.agent
    lxcpath = agent.lxcpath
    directories = frozenset(p.name for p in lxcpath.iterdir() if p.is_dir())
    listed = subprocess.run(
        ["lxc-ls", "-P", str(lxcpath), "-1"], capture_output=True, text=True, check=False
    ).stdout.split()
    mounted = set()
    prefix = f"{lxcpath}/"
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4]
        if point.startswith(prefix):
            mounted.add(point[len(prefix) :].split("/")[0])
    with agent.client() as http:
        containers = retrying(lambda: http.get("/v1/containers").raise_for_status().json())
    return HostView(
        directories=directories,
        lxc_names=frozenset(listed),
        mounted=frozenset(mounted),
        agent_containers=tuple(containers["items"]),
        agent_log=agent.log.read_text(errors="replace"),
    )


def settle(
    kube: Kube, host: Host, history: History, operator_log: Path, since: float
) -> tuple[dict[str, Any], list[str], float | None]:
    """Poll the end state until it holds or CONVERGENCE_SECONDS after `since` have passed;
    the last figures and problems, and when it held (seconds after `since`)."""
    deadline = since + CONVERGENCE_SECONDS
    while True:
        figures, problems = audit(
            kube.items("sandboxes"),
            kube.items("sandboxpools"),
            host_view(host),
            history,
            operator_log.read_text(errors="replace"),
        )
        now = time.monotonic()
        if not problems:
            return figures, problems, round(now - since, 2)
        if now > deadline:
            return figures, problems, None
        time.sleep(0.5)


# ----- the run --------------------------------------------------------------------------------


def chaos(plan: ChaosPlan, plane: ControlPlane) -> ChaosReport:
    report = ChaosReport(seed=plan.seed, plan=asdict(plan))
    log(f"seed {plan.seed}; kills: {plan.schedule()}")
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    failed = True
    try:
        cluster = plane.up()
        with _stack(cluster, plane) as (kube, targets):
            _run(plan, kube, targets, report)
        denied = forbidden_lines(targets.operator.log, targets.excused)
        report.problems += [f"the operator was denied (RBAC): {line}" for line in denied[:20]]
        log(f"churn {json.dumps(report.churn)}")
        log(f"figures {json.dumps(report.figures)}")
        log(f"converged {report.converged_seconds} s after the {report.deadline_from}")
        failed = bool(report.problems or report.churn.get("restartFailures"))
    finally:
        if failed:
            kept = keep_logs(plane, report.seed)
            if kept:
                log(f"the control plane's logs are kept in {kept}")
                if report.problems:  # beside them (a restart made good is not one)
                    report.problems.append(f"the control plane's logs are kept in {kept}")
        plane.down()
        for problem in report.problems:
            log(f"problem: {problem}")
    return report


def keep_logs(plane: ControlPlane, seed: int) -> Path | None:
    """Copy the control plane's logs (etcd, kube-apiserver, kube-controller-manager) beside
    the run's other logs before plane.down() removes them; where they went."""
    logs = plane.directory / "logs"
    if not logs.is_dir():
        return None
    kept = RUN_DIR / f"chaos-{seed}-control-plane-logs"
    shutil.rmtree(kept, ignore_errors=True)
    shutil.copytree(logs, kept)
    return kept


@contextlib.contextmanager
def _stack(cluster: Cluster, plane: ControlPlane) -> Iterator[tuple[Kube, Targets]]:
    crds = str(ROOT / "crds")
    cluster.kubectl("apply", "--server-side", "-f", crds)
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", crds)
    cluster.kubectl("create", "namespace", SYSTEM_NS, check=False)
    kube = Kube(cluster)
    cluster.kubectl("apply", "-k", str(RBAC))
    token = service_account_token(kube.core, SYSTEM_NS, "tuxio-operator")
    operator = Operator(
        cluster,
        RUN_DIR / "chaos-operator.log",
        token_kubeconfig(cluster, token, RUN_DIR / "chaos-operator.kubeconfig"),
        # The claim webhook answers this control plane's API server only (its own PKI).
        {
            **OPERATOR_ENV,
            "TUXIO_OPERATOR_WEBHOOK_CLIENT_CA": str(
                cluster.kubeconfig.parent / "pki" / "webhook-client-ca.crt"
            ),
        },
    )
    operator.log.write_bytes(b"")
    operator.start()
    try:
        with (
            agent_over_tls(cluster, kube.custom, "chaos-host") as host,
            running_gateway(cluster, kube.core, ("chaos-a", "chaos-b")) as gateway,
        ):
            cluster.kubectl("create", "namespace", NAMESPACE, check=False)
            targets = Targets(plane, operator, host, gateway)
            try:
                yield kube, targets
            finally:
                if operator.proc is None:
                    operator.start()
                for plural in ("sandboxes", "sandboxpools"):
                    cluster.kubectl(
                        "delete",
                        plural,
                        "--all",
                        "-n",
                        NAMESPACE,
                        "--wait=true",
                        "--timeout=180s",
                        check=False,
                    )
                with host.agent.client() as http:
                    wait_until(
                        lambda: not http.get("/v1/containers").json()["items"],
                        timeout=120,
                        interval=0.5,
                    )
    finally:
        if operator.proc is None:
            operator.start()
        operator.stop()
        kube.api.close()  # its pooled connections, not left to the garbage collector


def _run(plan: ChaosPlan, kube: Kube, targets: Targets, report: ChaosReport) -> None:
    rng = random.Random(plan.seed)
    replicas = {pool: rng.randint(1, plan.max_replicas) for pool in POOLS}
    uids = {
        pool: str(kube.create("sandboxpools", pool_body(pool, n))["metadata"]["uid"])
        for pool, n in replicas.items()
    }
    history = History()
    churn = Churn(kube, plan, history, uids, replicas)
    started = time.monotonic()
    last_kill = started
    scaler = threading.Thread(target=churn.guarded("scaler", churn.scaler), daemon=True)

    def kills() -> None:
        nonlocal last_kill
        last_kill = killer(churn, targets, report, started)

    killing = threading.Thread(target=churn.guarded("killer", kills), daemon=True)
    workers = [
        threading.Thread(
            target=churn.guarded(f"worker {i}", lambda i=i: churn.worker(i)),  # type: ignore[misc]
            daemon=True,
        )
        for i in range(plan.workers)
    ]
    for thread in (scaler, killing, *workers):
        thread.start()
    for thread in workers:
        thread.join()
    churn_end = time.monotonic()
    churn.done.set()
    scaler.join()
    killing.join()
    since = max(last_kill, churn_end)
    log(f"churn over after {churn_end - started:.1f} s; settling")
    figures, problems, converged = settle(kube, targets.host, history, targets.operator.log, since)
    if problems:  # the agent's log is what the audit read; kept beside the operator's
        kept = RUN_DIR / f"chaos-{plan.seed}-agent.log"
        shutil.copyfile(targets.host.agent.log, kept)
        shutil.copyfile(targets.operator.log, RUN_DIR / f"chaos-{plan.seed}-operator.log")
        problems.append(f"the agent's and the operator's logs are kept beside {kept}")
    report.churn = {
        **dict(churn.counts),
        "sandboxes": churn.created,
        "seconds": round(churn_end - started, 1),
        "finalReplicas": dict(churn.replicas),
        # Failed restarts of the control plane that a later try made good (not a loss, but
        # said: each with hack/cluster-up.sh's output; the control plane's logs are kept).
        "restartFailures": list(targets.restart_failures),
    }
    report.figures = figures
    report.problems = [*churn.failures, *churn.stuck, *problems]
    report.converged_seconds = converged
    report.deadline_from = "last kill" if last_kill >= churn_end else "end of churn"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sandboxes", type=int, default=200)
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument(
        "--shared-control-plane",
        action="store_true",
        help="kill TUXIO_CLUSTER_DIR's control plane instead of one of the run's own",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    plan = ChaosPlan(sandboxes=args.sandboxes, kills=args.kills, seed=seed, workers=args.workers)
    plane = shared_control_plane() if args.shared_control_plane else own_control_plane()
    report = chaos(plan, plane)
    document = {
        "benchmark": "chaos",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        **asdict(report),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(
        json.dumps(
            {
                k: document[k]
                for k in ("seed", "kills", "churn", "figures", "problems", "converged_seconds")
            },
            indent=2,
        )
    )
    log(f"seed {seed}: {'OK' if not report.problems else f'{len(report.problems)} problems'}")
    return 0 if not report.problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
