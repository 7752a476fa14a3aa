"""End to end: a real kube-apiserver (built from source by hack/), the operator, an agent, LXC.

The control plane comes from hack/cluster-up.sh; a missing prerequisite (no Go, a failed build)
fails the session. The operator and agent run as local processes, as in `make demo`; the
operator authenticates as the ServiceAccount of manifests/base/rbac, with a token from the
TokenRequest API, so every run shows that the RBAC of the manifests is enough (and a 403 in its
log fails the session).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from tests.support import (
    START_TIMEOUT,
    STARTED,
    STOP_TIMEOUT,
    TEST_ROOT,
    Agent,
    destroy_everything,
    free_port,
    make_agent,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
OPERATOR = str(Path(sys.executable).with_name("tuxio-operator"))
SYSTEM_NS = "tuxio-system"
GROUP, VERSION = "tux.io", "v1alpha1"
RBAC = ROOT / "manifests" / "base" / "rbac"
OPERATOR_SA = "tuxio-operator"
CLUSTER_DIR = Path(os.environ.get("TUXIO_CLUSTER_DIR", "/var/tmp/tuxio-cluster"))
# The operator's log and kubeconfig, one place per cluster, so that two sessions on two
# clusters (TUXIO_CLUSTER_DIR and the port variables of hack/lib/cluster-env.sh) keep apart.
# The certificate the API server presents to webhooks, and its CA (hack/cluster-up.sh).
WEBHOOK_CLIENT_CA = CLUSTER_DIR / "pki" / "webhook-client-ca.crt"
WEBHOOK_CLIENT_NAME = "kube-apiserver-webhook-client"
RUN_DIR = TEST_ROOT if CLUSTER_DIR.name == "tuxio-cluster" else TEST_ROOT / CLUSTER_DIR.name


# Short grace periods so failure handling shows within a test's patience.
OPERATOR_ENV = {
    "TUXIO_OPERATOR_PROBE_INTERVAL_SECONDS": "1",
    # The session's agents serve plain http on the loopback (the TLS ones are tested apart).
    "TUXIO_OPERATOR_ALLOW_PLAINTEXT_LOOPBACK_AGENTS": "true",
    "TUXIO_OPERATOR_NOT_READY_AFTER_SECONDS": "3",
    "TUXIO_OPERATOR_LOST_AFTER_SECONDS": "4",
    "TUXIO_OPERATOR_ORPHAN_GRACE_SECONDS": "2",
    "TUXIO_OPERATOR_USAGE_WRITE_SECONDS": "3",
    "TUXIO_OPERATOR_RETRY_DELAY_SECONDS": "0.5",
    "TUXIO_OPERATOR_UNSCHEDULABLE_RETRY_SECONDS": "1",
    "TUXIO_OPERATOR_ADMISSION_CLAIM_SECONDS": "3",
    # The usage ledger: a SQLite file of this cluster's run (tests/e2e/test_ledger.py reads it).
    "TUXIO_OPERATOR_LEDGER_URL": f"sqlite:///{RUN_DIR}/ledger.sqlite3",
}


@dataclass
class Cluster:
    kubeconfig: Path
    kubectl_bin: Path
    env: dict[str, str] = field(default_factory=dict)

    def kubectl(
        self, *args: str, check: bool = True, stdin: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.kubectl_bin), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def apply(
        self, manifest: dict[str, Any] | str, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        return self.kubectl("apply", "-f", "-", *extra, stdin=text, check=check)


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    up = subprocess.run(
        [str(ROOT / "hack" / "cluster-up.sh")], capture_output=True, text=True, check=False
    )
    assert up.returncode == 0, (
        f"hack/cluster-up.sh failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
    )
    bin_dir = (
        subprocess.run(
            [str(ROOT / "hack" / "build-control-plane.sh")],
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    kubeconfig = CLUSTER_DIR / "kubeconfig"
    found = Cluster(kubeconfig, Path(bin_dir) / "kubectl", {"KUBECONFIG": str(kubeconfig)})
    found.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    found.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds"))
    found.kubectl("create", "namespace", SYSTEM_NS, check=False)
    return found


@pytest.fixture(scope="session")
def kube(cluster: Cluster) -> kubernetes.client.ApiClient:
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(cluster.kubeconfig), client_configuration=configuration
    )
    return kubernetes.client.ApiClient(configuration)


@pytest.fixture(scope="session")
def custom(kube: kubernetes.client.ApiClient) -> kubernetes.client.CustomObjectsApi:
    return kubernetes.client.CustomObjectsApi(kube)


@pytest.fixture(scope="session")
def core(kube: kubernetes.client.ApiClient) -> kubernetes.client.CoreV1Api:
    return kubernetes.client.CoreV1Api(kube)


def token_kubeconfig(cluster: Cluster, token: str, path: Path) -> Path:
    """A kubeconfig for the cluster's API server that authenticates with `token` only."""
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "token", "user": {"token": token}}],
        "contexts": [
            {"name": "token", "context": {"cluster": admin["clusters"][0]["name"], "user": "token"}}
        ],
        "current-context": "token",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config))
    return path


def service_account_token(core: kubernetes.client.CoreV1Api, namespace: str, name: str) -> str:
    """A token for the ServiceAccount from the TokenRequest API, good for the session."""
    request = kubernetes.client.AuthenticationV1TokenRequest(
        spec=kubernetes.client.V1TokenRequestSpec(audiences=[], expiration_seconds=24 * 3600)
    )
    answer = core.create_namespaced_service_account_token(name, namespace, request)
    return str(answer.status.token)


@pytest.fixture(scope="session")
def operator_kubeconfig(cluster: Cluster, core: kubernetes.client.CoreV1Api) -> Path:
    """The operator's credentials: the manifests' ServiceAccount and roles, nothing more."""
    cluster.kubectl("apply", "-k", str(RBAC))
    token = service_account_token(core, SYSTEM_NS, OPERATOR_SA)
    return token_kubeconfig(cluster, token, RUN_DIR / "operator.kubeconfig")


# What a denied request leaves in the operator's log: the Kubernetes client's ApiException,
# and kopf's own words when it may not list, watch or post.
FORBIDDEN = re.compile(r"\(403\)|Forbidden|Not enough permissions|Failed to post an event")


def forbidden_lines(log: Path, excused: Sequence[tuple[int, int]] = ()) -> list[str]:
    """Lines of the log that tell of a request RBAC denied. An Event posted into a namespace
    being deleted (403, "is being terminated") or already gone (404, "not found"), as a
    test's namespace goes, is no RBAC matter, nor a line logged within an `excused` span of
    the log (byte offsets: while an API server was starting, as the chaos suite restarts it,
    it denies what its RBAC cache has not loaded yet)."""
    lines = log_lines(log, excused)
    return [
        line
        for i, line in enumerate(lines)
        if FORBIDDEN.search(line)
        and not any("is being terminated" in after for after in lines[i : i + 5])
        and not ("Failed to post an event" in line and "Code: 404" in line)
    ]


def log_lines(log: Path, excused: Sequence[tuple[int, int]] = ()) -> list[str]:
    """The log's lines, less those that begin within an excused span (byte offsets)."""
    kept, offset = [], 0
    for raw in log.read_bytes().splitlines(keepends=True):
        if not any(start <= offset < end for start, end in excused):
            kept.append(raw.decode(errors="replace").rstrip("\r\n"))
        offset += len(raw)
    return kept


class Operator:
    """tuxio-operator as a local process, with the kubeconfig it is given."""

    def __init__(
        self,
        cluster: Cluster,
        log: Path,
        kubeconfig: Path,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.cluster = cluster
        self.log = log
        self.kubeconfig = kubeconfig
        self.extra_env = extra_env or {}
        self.port = free_port()
        self.webhook_port = free_port()  # claims at admission: the API server calls it here
        self.metrics_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            **OPERATOR_ENV,
            "TUXIO_OPERATOR_WEBHOOK_URL": f"https://127.0.0.1:{self.webhook_port}",
            "TUXIO_OPERATOR_WEBHOOK_LISTEN": "127.0.0.1",
            "TUXIO_OPERATOR_WEBHOOK_PORT": str(self.webhook_port),
            # Only the API server: its webhook client certificate (hack/cluster-up.sh).
            "TUXIO_OPERATOR_WEBHOOK_CLIENT_CA": str(WEBHOOK_CLIENT_CA),
            "TUXIO_OPERATOR_WEBHOOK_CLIENT_NAMES": json.dumps([WEBHOOK_CLIENT_NAME]),
            "TUXIO_OPERATOR_METRICS_LISTEN": "127.0.0.1",
            "TUXIO_OPERATOR_METRICS_PORT": str(self.metrics_port),
            **self.extra_env,
            "KUBECONFIG": str(self.kubeconfig),
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [OPERATOR, "--liveness", f"http://127.0.0.1:{self.port}/healthz"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        STARTED.append(self.proc)
        try:
            wait_until(self._alive, timeout=START_TIMEOUT)
        except BaseException:
            self.stop(signal.SIGKILL)  # never a second operator left running behind a failure
            raise

    def _alive(self) -> bool:
        import httpx

        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"operator exited:\n{self.log.read_text()[-4000:]}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None


@contextlib.contextmanager
def operator_in_place_of(
    session: Operator, log_name: str, extra_env: dict[str, str]
) -> Iterator[Operator]:
    """Another operator, with `extra_env`, while the session's one is stopped; the session's
    is started again afterwards, and a request RBAC denied in the other's log fails."""
    session.stop()
    log = RUN_DIR / log_name
    log.write_bytes(b"")
    running = Operator(session.cluster, log, session.kubeconfig, extra_env)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        session.start()
    denied = forbidden_lines(log)
    assert not denied, f"{log_name}: the operator was denied (RBAC):\n" + "\n".join(denied[:20])


@dataclass
class Host:
    """An agent registered as a SandboxHost."""

    name: str
    agent: Agent


def register_host(cluster: Cluster, name: str, agent: Agent, **spec: Any) -> Host:
    # A namesake left half-deleted by an earlier run (its finalizer outlived that run's
    # operator) would be finished off by ours and vanish mid-session: clear it first.
    cluster.kubectl(
        "patch",
        "sandboxhost",
        name,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":null}}',
        check=False,
    )
    cluster.kubectl(
        "delete", "sandboxhost", name, "--ignore-not-found", "--wait=true", "--timeout=60s"
    )
    token = base64.b64encode(agent.token.encode()).decode()
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": f"{name}-agent", "namespace": SYSTEM_NS},
            "data": {"token": token},
        }
    )
    cluster.apply(
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "SandboxHost",
            "metadata": {"name": name, "labels": spec.pop("labels", {})},
            "spec": {
                "endpoint": agent.url,
                "credentialsSecretRef": {"name": f"{name}-agent", "namespace": SYSTEM_NS},
                **spec,
            },
        }
    )
    return Host(name, agent)


@pytest.fixture(scope="session")
def host(cluster: Cluster, custom: kubernetes.client.CustomObjectsApi) -> Iterator[Host]:
    agent = make_agent("e2e", ["--reserved-cpus", "0"])
    agent.start()
    registered = register_host(cluster, "local", agent, location={"region": "local"})
    yield registered
    cluster.kubectl("delete", "sandboxhost", registered.name, "--ignore-not-found", "--wait=false")
    agent.stop()
    destroy_everything(agent)


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster,
    host: Host,
    custom: kubernetes.client.CustomObjectsApi,
    operator_kubeconfig: Path,
) -> Iterator[Operator]:
    log = RUN_DIR / "operator.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"")
    # The real GeoLite2 City database (hack/fetch-geolite2.sh), for placement near visitors.
    fetched = subprocess.run(
        [str(ROOT / "hack" / "fetch-geolite2.sh")], capture_output=True, text=True, check=False
    )
    assert fetched.returncode == 0, f"hack/fetch-geolite2.sh failed:\n{fetched.stderr}"
    running = Operator(
        cluster,
        log,
        operator_kubeconfig,
        {"TUXIO_OPERATOR_GEOIP_DATABASE": fetched.stdout.strip()},
    )
    running.start()
    wait_until(lambda: host_ready(custom, host.name), timeout=60)
    yield running
    if running.proc is None:
        running.start()
    # While the operator runs, so that its finalizer on the SandboxHost is released.
    cluster.kubectl("delete", "sandboxhost", host.name, "--ignore-not-found", "--timeout=60s")
    running.stop()
    denied = forbidden_lines(log)
    assert not denied, "the operator was denied by the API server (RBAC):\n" + "\n".join(
        denied[:20]
    )


def host_ready(custom: kubernetes.client.CustomObjectsApi, name: str) -> bool:
    body = custom.get_cluster_custom_object(GROUP, VERSION, "sandboxhosts", name)
    return condition_status(body, "Ready") == "True"


def condition_status(body: dict[str, Any], type_: str) -> str | None:
    for found in (body.get("status") or {}).get("conditions", []):
        if found.get("type") == type_:
            return str(found.get("status"))
    return None


@pytest.fixture
def namespace(
    request: pytest.FixtureRequest, cluster: Cluster, operator: Operator
) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{base}-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    if operator.proc is None:
        operator.start()  # finalizers need the operator to let go
    cluster.kubectl(
        "delete", "sandboxes", "--all", "-n", name, "--wait=true", "--timeout=60s", check=False
    )
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def sandbox(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Sandbox",
        "metadata": {"name": name},
        "spec": spec,
    }


def get_sandbox(
    custom: kubernetes.client.CustomObjectsApi, namespace: str, name: str
) -> dict[str, Any]:
    found: dict[str, Any] = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "sandboxes", name
    )
    return found


def wait_phase(
    custom: kubernetes.client.CustomObjectsApi,
    namespace: str,
    name: str,
    phase: str,
    timeout: float = 60,
) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        body = get_sandbox(custom, namespace, name)
        return body if (body.get("status") or {}).get("phase") == phase else None

    found = wait_until(reached, timeout=timeout)
    assert isinstance(found, dict)
    return found


def gone(custom: kubernetes.client.CustomObjectsApi, namespace: str, name: str) -> bool:
    try:
        get_sandbox(custom, namespace, name)
    except kubernetes.client.exceptions.ApiException as exc:
        return exc.status == 404
    return False
