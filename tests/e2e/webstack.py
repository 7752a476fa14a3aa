"""tuxio-web on the real stack: the site as a local process under the manifests' ServiceAccount
(base/web's roles, a TokenRequest token; a 403 in its log fails), its SandboxPool, and the
gateway's visitor endpoint it sends browsers to. `running_site` serves the e2e tests;
`whole_stack` brings up everything from nothing for `make demo` and `make bench-web`."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import kubernetes

from tests.e2e.conftest import (
    GROUP,
    OPERATOR_ENV,
    RBAC,
    ROOT,
    RUN_DIR,
    SYSTEM_NS,
    VERSION,
    Cluster,
    Operator,
    service_account_token,
    token_kubeconfig,
)
from tests.e2e.test_deploy import apply_web_rbac
from tests.e2e.test_gateway import HOST_LABEL, Gateway, agent_over_tls, running_gateway
from tests.support import STARTED, free_port, wait_until

WEB = str(Path(sys.executable).with_name("tuxio-web"))
POOL = "web"
FORBIDDEN = re.compile(r"\(403\)|: 403 |Forbidden|forbidden")


@dataclass
class Site:
    url: str
    namespace: str
    log: Path
    proc: subprocess.Popen[bytes]
    gateway: Gateway

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = httpx.get(f"{self.url}/readyz", timeout=10).json()
        return answer

    def forbidden(self) -> list[str]:
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if FORBIDDEN.search(line)]


def origins(port: int) -> str:
    return f"http://127.0.0.1:{port},http://localhost:{port}"


def gateway_env(site_port: int) -> dict[str, str]:
    """The gateway's visitor endpoint for the site's pages: plain ws:// on loopback (the site
    is plain http:// here; behind an Ingress both are TLS)."""
    return {
        "TUXIO_GATEWAY_VISITOR_TLS": "false",
        "TUXIO_GATEWAY_VISITOR_ALLOWED_ORIGINS": origins(site_port),
    }


def pool(replicas: int) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SandboxPool",
        "metadata": {"name": POOL},
        "spec": {
            "replicas": replicas,
            "template": "busybox",
            # 256Mi of disk: a shell's worth, and hundreds of them fit the host's disk (the
            # scheduler does not overcommit disk).
            "resources": {"cpus": 1, "memory": "64Mi", "pids": 64, "disk": "256Mi"},
            "placement": {"hostSelector": HOST_LABEL, "spread": "None"},
        },
    }


def _sandboxes(custom: kubernetes.client.CustomObjectsApi, namespace: str) -> list[str]:
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "sandboxes")
    return [s["metadata"]["name"] for s in listed["items"]]


@contextlib.contextmanager
def running_site(
    cluster: Cluster,
    core: kubernetes.client.CoreV1Api,
    custom: kubernetes.client.CustomObjectsApi,
    gateway: Gateway,
    namespace: str,
    port: int,
    env: dict[str, str] | None = None,
    pool_replicas: int = 2,
) -> Iterator[Site]:
    apply_web_rbac(cluster, namespace)
    cluster.apply(pool(pool_replicas), "-n", namespace)
    token = service_account_token(core, namespace, "tuxio-web")
    kubeconfig = token_kubeconfig(cluster, token, RUN_DIR / f"web-{namespace}.kubeconfig")
    log = RUN_DIR / f"web-{namespace}.log"
    log.write_bytes(b"")
    visitor_port = gateway.replicas[0].visitor_port
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [WEB],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "KUBECONFIG": str(kubeconfig),
                "TUXIO_WEB_KUBECONFIG": str(kubeconfig),
                "TUXIO_WEB_LISTEN": "127.0.0.1",
                "TUXIO_WEB_PORT": str(port),
                "TUXIO_WEB_NAMESPACE": namespace,
                "TUXIO_WEB_POOL": POOL,
                "TUXIO_WEB_GATEWAY_URL": f"ws://127.0.0.1:{visitor_port}",
                "TUXIO_WEB_SECURE_COOKIE": "false",
                "TUXIO_WEB_CAPACITY_REFRESH_SECONDS": "1",
                "TUXIO_WEB_DELETE_ON_EXIT": "true",
                **(env or {}),
            },
        )
    STARTED.append(proc)
    site = Site(f"http://127.0.0.1:{port}", namespace, log, proc, gateway)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"tuxio-web exited:\n{log.read_text()[-4000:]}")
        try:
            return httpx.get(f"{site.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=90, interval=0.2)
        yield site
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=90)
        # What tuxio-web made, it deleted at exit; what its pool keeps warm goes with the pool.
        cluster.kubectl("delete", "sandboxpool", POOL, "-n", namespace, "--ignore-not-found",
                        "--wait=true", "--timeout=120s", check=False)  # fmt: skip
        # A pool of hundreds takes its agent minutes to delete on two cores.
        wait_until(
            lambda: not _sandboxes(custom, namespace), timeout=max(180, pool_replicas), interval=0.5
        )
    denied = site.forbidden()
    assert not denied, "tuxio-web was denied (RBAC):\n" + "\n".join(denied[:20])


# ----- everything from nothing, for make demo and make bench-web ------------------------------


def _cluster() -> Cluster:
    up = subprocess.run([str(ROOT / "hack" / "cluster-up.sh")], capture_output=True, text=True,
                        check=False)  # fmt: skip
    if up.returncode != 0:
        raise RuntimeError(f"hack/cluster-up.sh failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}")
    built = subprocess.run([str(ROOT / "hack" / "build-control-plane.sh")], capture_output=True,
                           text=True, check=True)  # fmt: skip
    bin_dir = Path(built.stdout.strip().splitlines()[-1])
    from tests.e2e.conftest import CLUSTER_DIR

    kubeconfig = CLUSTER_DIR / "kubeconfig"
    cluster = Cluster(kubeconfig, bin_dir / "kubectl", {"KUBECONFIG": str(kubeconfig)})
    cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    cluster.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s", "-f", str(ROOT / "crds")
    )
    cluster.kubectl("create", "namespace", SYSTEM_NS, check=False)
    return cluster


@contextlib.contextmanager
def whole_stack(env: dict[str, str] | None = None, pool_replicas: int = 2) -> Iterator[Site]:
    """Control plane, operator, an agent over TLS with LXC, the gateway and tuxio-web, all
    on this machine; torn down (every sandbox deleted) on the way out."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    cluster = _cluster()
    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(cluster.kubeconfig), client_configuration=configuration
    )
    api = kubernetes.client.ApiClient(configuration)
    core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
    cluster.kubectl("apply", "-k", str(RBAC))
    token = service_account_token(core, SYSTEM_NS, "tuxio-operator")
    operator_config = token_kubeconfig(cluster, token, RUN_DIR / "operator.kubeconfig")
    operator = Operator(cluster, RUN_DIR / "web-operator.log", operator_config, OPERATOR_ENV)
    operator.log.write_bytes(b"")
    operator.start()
    namespace = f"web-{uuid.uuid4().hex[:5]}"
    cluster.kubectl("create", "namespace", namespace)
    port = free_port()
    try:
        with (
            agent_over_tls(cluster, custom, "web-host"),
            running_gateway(cluster, core, ("gw-web",), gateway_env(port)) as gateway,
            running_site(
                cluster, core, custom, gateway, namespace, port, env, pool_replicas
            ) as site,  # fmt: skip
        ):
            yield site
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        operator.stop()
