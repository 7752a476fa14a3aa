"""The gateway end to end: registered as the aggregated API subresources.tux.io/v1alpha1 of the
real API server (its APIService, its Service with two replicas as endpoints), the real operator,
a real agent over TLS and LXC. The gateway runs as two local processes under the manifests'
ServiceAccount (a TokenRequest token; a 403 in their logs fails the module), with the serving
certificate that hack/create-gateway-secrets.sh made and wrote into the APIService.

Users are ServiceAccounts bound to the built-in `edit` and `view` roles (the manifests' editor
role is aggregated into `edit`), and one bound to a Role that has `get` but not `create` on the
subresources: the API server lets it through, the gateway's own review refuses it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import secrets
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
import kubernetes
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kubernetes.stream.ws_client import WSClient
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.e2e.conftest import (
    GROUP,
    ROOT,
    RUN_DIR,
    SYSTEM_NS,
    VERSION,
    Cluster,
    Host,
    Operator,
    host_ready,
    log_lines,
    register_host,
    sandbox,
    service_account_token,
    token_kubeconfig,
    wait_phase,
)
from tests.e2e.test_deploy import Person
from tests.e2e.test_webhook import host_address
from tests.gatewaykit import CA
from tests.support import (
    START_TIMEOUT,
    STARTED,
    Agent,
    destroy_everything,
    free_port,
    prepare_data_dir,
    wait_until,
)
from tests.wsclient import ClientConnection, connect

GATEWAY = str(Path(sys.executable).with_name("tuxio-gateway"))
MANIFESTS = ROOT / "manifests" / "base" / "gateway"
API = "/apis/subresources.tux.io/v1alpha1"
API_SERVICE = "v1alpha1.subresources.tux.io"
SERVICE = "tuxio-gateway-api"
API_NAME = f"{SERVICE}.{SYSTEM_NS}.svc"  # what the API server checks the certificate for
VISITOR_NAME = f"tuxio-gateway.{SYSTEM_NS}.svc"
SIGNING_KEY = "tuxio-gateway-signing-key"
ORIGIN = "https://play.example.org"
V5 = "v5.channel.k8s.io"
HOST_LABEL = {"tux.io/test": "gateway"}
# What a request RBAC denied leaves in the gateway's log: the API server's 403 on a list,
# watch, get, patch or review, as gateway.kube.KubeError words it ("<path>: 403 <message>").
FORBIDDEN = re.compile(r": 403 | is forbidden")


# ----- the gateway as local processes behind the Service --------------------------------------


@dataclass
class Replica:
    """One `tuxio-gateway serve` process."""

    name: str
    kubeconfig: Path
    tls: Path
    address: str
    api_port: int = field(default_factory=free_port)
    visitor_port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    # Spans of the log (byte offsets) whose 403s are no RBAC matter: an API server starting.
    excused: list[tuple[int, int]] = field(default_factory=list)

    @property
    def log(self) -> Path:
        return RUN_DIR / f"gateway-{self.name}.log"

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "TUXIO_GATEWAY_REPLICA": self.name,
            "TUXIO_GATEWAY_API_LISTEN": self.address,
            "TUXIO_GATEWAY_API_PORT": str(self.api_port),
            "TUXIO_GATEWAY_VISITOR_LISTEN": "127.0.0.1",
            "TUXIO_GATEWAY_VISITOR_PORT": str(self.visitor_port),
            "TUXIO_GATEWAY_TLS_CERT_FILE": str(self.tls / "tls.crt"),
            "TUXIO_GATEWAY_TLS_KEY_FILE": str(self.tls / "tls.key"),
            "TUXIO_GATEWAY_VISITOR_ALLOWED_ORIGINS": ORIGIN,
            "TUXIO_GATEWAY_TOKEN_MAX_SECONDS": "900",
            "TUXIO_GATEWAY_ACCESS_LOG": "true",
            "TUXIO_GATEWAY_METRICS_LISTEN": "127.0.0.1",
            "TUXIO_GATEWAY_METRICS_PORT": str(self.metrics_port),
            **self.extra_env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [GATEWAY, "serve"], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        STARTED.append(self.proc)
        wait_until(self.ready, timeout=START_TIMEOUT)

    def ready(self) -> bool:
        import httpx

        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway {self.name} exited:\n{self.log.read_text()[-4000:]}")
        context = ssl.create_default_context(cafile=str(self.tls / "ca.crt"))
        try:
            with httpx.Client(verify=context, timeout=2) as http:
                answer = http.get(
                    f"https://{self.address}:{self.api_port}/readyz",
                    extensions={"sni_hostname": API_NAME},
                )
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
        self.proc = None

    def forbidden(self) -> list[str]:
        return [line for line in log_lines(self.log, self.excused) if FORBIDDEN.search(line)]


@dataclass
class Gateway:
    cluster: Cluster
    replicas: list[Replica]
    ca_pem: str
    admin_env: dict[str, str]

    def visitor_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem)


def _apply_gateway_objects(cluster: Cluster) -> None:
    """The base's objects, as kustomize builds them, less the Deployment and its budget (no
    scheduler here: the local processes stand in for its pods)."""
    built = yaml.safe_load_all(cluster.kubectl("kustomize", str(MANIFESTS)).stdout)
    kept = [o for o in built if o and o["kind"] not in ("Deployment", "PodDisruptionBudget")]
    cluster.apply({"apiVersion": "v1", "kind": "List", "items": kept})


def _secret_data(core: kubernetes.client.CoreV1Api, name: str) -> dict[str, str]:
    found = core.read_namespaced_secret(name, SYSTEM_NS)
    return {k: base64.b64decode(v).decode() for k, v in (found.data or {}).items()}


def _api_service_available(cluster: Cluster) -> bool:
    body = json.loads(cluster.kubectl("get", "apiservice", API_SERVICE, "-o", "json").stdout)
    return any(
        c["type"] == "Available" and c["status"] == "True"
        for c in (body.get("status") or {}).get("conditions", [])
    )


@pytest.fixture(scope="module")
def gateway(cluster: Cluster, core: kubernetes.client.CoreV1Api) -> Iterator[Gateway]:
    with running_gateway(cluster, core) as found:
        yield found


@contextlib.contextmanager
def running_gateway(
    cluster: Cluster,
    core: kubernetes.client.CoreV1Api,
    names: tuple[str, ...] = ("gw-a", "gw-b"),
    extra_env: dict[str, str] | None = None,
) -> Iterator[Gateway]:
    """The gateway's objects, its serving certificate, and `names` replicas registered as the
    APIService's endpoints; everything withdrawn afterwards, and a 403 in their logs fails."""
    cluster.kubectl("apply", "-k", str(ROOT / "manifests" / "base" / "rbac"))
    _apply_gateway_objects(cluster)
    admin_env = {
        **os.environ,
        **cluster.env,
        "PATH": f"{cluster.kubectl_bin.parent}:{os.environ['PATH']}",
    }
    made = subprocess.run([str(ROOT / "hack" / "create-gateway-secrets.sh")], env=admin_env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert made.returncode == 0, made.stderr
    serving = _secret_data(core, "tuxio-gateway-serving")
    tls = RUN_DIR / "gateway-tls"
    tls.mkdir(parents=True, exist_ok=True)
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (tls / key).write_text(serving[key])
    service = json.loads(cluster.kubectl("get", "apiservice", API_SERVICE, "-o", "json").stdout)
    assert base64.b64decode(service["spec"]["caBundle"]).decode() == serving["ca.crt"]
    token = service_account_token(core, SYSTEM_NS, "tuxio-gateway")
    kubeconfig = token_kubeconfig(cluster, token, RUN_DIR / "gateway.kubeconfig")
    # Both on this machine's address (an endpoint may not be loopback), each on a port of its
    # own: one EndpointSlice per replica, as a slice has one port list for all its endpoints.
    address = host_address()
    replicas = [Replica(name, kubeconfig, tls, address, extra_env=dict(extra_env or {}))
                for name in names]  # fmt: skip
    for replica in replicas:
        replica.log.write_bytes(b"")
        replica.start()
    found = Gateway(cluster, replicas, serving["ca.crt"], admin_env)
    _publish_each(found)
    wait_until(lambda: _api_service_available(cluster), timeout=90)
    try:
        yield found
    finally:
        for replica in replicas:
            replica.stop()
        cluster.kubectl("delete", "apiservice", API_SERVICE, "--ignore-not-found")
        cluster.kubectl("delete", "endpointslice", "-n", SYSTEM_NS, "-l",
                        f"kubernetes.io/service-name={SERVICE}", "--ignore-not-found")  # fmt: skip
    denied = [f"{r.name}: {line}" for r in replicas for line in r.forbidden()]
    assert not denied, "the gateway was denied by the API server (RBAC):\n" + "\n".join(denied[:20])


def _publish_each(gw: Gateway, ready: dict[str, bool] | None = None) -> None:
    """One EndpointSlice per replica (each has its own port, as two processes on one address
    must): the API server picks among the ready endpoints of all slices of the Service."""
    ready = ready or {}
    for replica in gw.replicas:
        gw.cluster.apply(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{SERVICE}-{replica.name}",
                    "namespace": SYSTEM_NS,
                    "labels": {"kubernetes.io/service-name": SERVICE},
                },
                "addressType": "IPv4",
                "ports": [{"name": "api", "port": replica.api_port, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": [replica.address],
                        "conditions": {"ready": ready.get(replica.name, True)},
                    }
                ],
            }
        )


# ----- an agent over TLS, its own host, and sandboxes on it -----------------------------------


@pytest.fixture(scope="module")
def tls_host(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, operator: Operator
) -> Iterator[Host]:
    with agent_over_tls(cluster, custom) as registered:
        yield registered


@contextlib.contextmanager
def agent_over_tls(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, name: str = "gateway-e2e"
) -> Iterator[Host]:
    """An agent serving TLS with a certificate of its own CA (which the host's Secret carries
    as ca.crt), registered as the SandboxHost `name` with HOST_LABEL: the gateway verifies
    it, as it would on a real host. The operator must be running."""
    data_dir = prepare_data_dir("gwagent")
    ca = CA("gateway-e2e-agents")
    cert, key = ca.issue("agent", server=True, names=("127.0.0.1",)).write(data_dir, "tls")
    agent = Agent(
        data_dir,
        free_port(),
        (data_dir / "token").read_text().strip(),
        [
            "--listen",
            "127.0.0.1",
            "--tls-cert",
            str(cert),
            "--tls-key",
            str(key),
            "--reserved-cpus",
            "0",
        ],
        scheme="https",
        verify=ssl.create_default_context(cadata=ca.pem),
    )
    agent.start()
    try:
        yield from _registered(cluster, custom, name, agent, ca)
    finally:
        agent.stop()
        destroy_everything(agent)


def _registered(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, name: str, agent: Agent, ca: CA
) -> Iterator[Host]:
    registered = register_host(
        cluster, name, agent, labels=HOST_LABEL, location={"region": "local"}
    )
    ca_b64 = base64.b64encode(ca.pem.encode()).decode()
    cluster.kubectl("patch", "secret", f"{name}-agent", "-n", SYSTEM_NS, "--type=merge",
                    "-p", json.dumps({"data": {"ca.crt": ca_b64}}))  # fmt: skip
    cluster.kubectl("patch", "sandboxhost", name, "--type=merge",
                    "-p", '{"spec":{"credentialsSecretRef":{"caKey":"ca.crt"}}}')  # fmt: skip
    wait_until(lambda: host_ready(custom, name), timeout=60)
    yield registered
    # The host goes once no Sandbox is left on it (else the operator tells of sandboxes whose
    # host is gone, into namespaces being deleted).
    wait_until(lambda: not _sandboxes_on(custom, name), timeout=180, interval=0.5)
    cluster.kubectl("delete", "sandboxhost", name, "--ignore-not-found", "--timeout=60s")


def _sandboxes_on(custom: kubernetes.client.CustomObjectsApi, host: str) -> list[str]:
    listed = custom.list_cluster_custom_object(GROUP, VERSION, "sandboxes")
    return [
        f"{s['metadata']['namespace']}/{s['metadata']['name']}"
        for s in listed["items"]
        if (s.get("status") or {}).get("host") == host
    ]


def running_sandbox(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, ns: str, name: str
) -> dict[str, Any]:
    cluster.apply(
        sandbox(name, template="busybox", placement={"hostSelector": HOST_LABEL}), "-n", ns
    )
    return wait_phase(custom, ns, name, "Running")


@dataclass
class People:
    editor: Person
    viewer: Person
    getter: Person  # `get` on the subresources, no `create`


@pytest.fixture
def people(cluster: Cluster, core: kubernetes.client.CoreV1Api, namespace: str) -> People:
    getter_role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "subresources-get-only", "namespace": namespace},
        "rules": [
            {"apiGroups": [GROUP], "resources": ["sandboxes"], "verbs": ["get"]},
            {"apiGroups": ["subresources.tux.io"],
             "resources": ["sandboxes/exec", "sandboxes/terminal", "sandboxes/files", "sandboxes/token"],
             "verbs": ["get", "update", "delete"]},
        ],
    }  # fmt: skip
    cluster.apply(getter_role)
    getter = Person.__new__(Person)
    getter.cluster = cluster
    getter.name = "getter-user"
    getter.identity = f"system:serviceaccount:{namespace}:getter-user"
    cluster.kubectl("create", "serviceaccount", "getter-user", "-n", namespace)
    cluster.kubectl("create", "rolebinding", "getter-user", "-n", namespace,
                    "--role=subresources-get-only", f"--serviceaccount={namespace}:getter-user")  # fmt: skip
    getter.kubeconfig = token_kubeconfig(
        cluster,
        service_account_token(core, namespace, "getter-user"),
        RUN_DIR / f"{namespace}-getter.kubeconfig",
    )
    return People(
        Person(cluster, core, namespace, "edit"), Person(cluster, core, namespace, "view"), getter
    )


def token_of(person: Person) -> str:
    return str(yaml.safe_load(person.kubeconfig.read_text())["users"][0]["user"]["token"])


# ----- WebSocket helpers ------------------------------------------------------------------------


def api_server(cluster: Cluster) -> tuple[str, ssl.SSLContext]:
    config = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    ca = base64.b64decode(config["certificate-authority-data"]).decode()
    return config["server"].replace("https://", "wss://"), ssl.create_default_context(cadata=ca)


def through_api(cluster: Cluster, person: Person, ns: str, name: str, sub: str,
                query: list[tuple[str, str]], protocols: tuple[str, ...] = (V5,)) -> ClientConnection:  # fmt: skip
    server, context = api_server(cluster)
    return connect(
        f"{server}{API}/namespaces/{ns}/sandboxes/{name}/{sub}?{urlencode(query)}",
        additional_headers={"Authorization": f"Bearer {token_of(person)}"},
        subprotocols=list(protocols),  # type: ignore[arg-type]
        ssl=context,
        open_timeout=30,
        compression=None,
        proxy=None,
    )


def bearer(token: str) -> str:
    return "base64url.bearer.authorization.k8s.io." + base64.urlsafe_b64encode(
        token.encode()
    ).decode().rstrip("=")


def visitor(gw: Gateway, replica: Replica, ns: str, name: str, token: str, sub: str = "terminal",
            query: list[tuple[str, str]] | None = None, origin: str | None = ORIGIN) -> ClientConnection:  # fmt: skip
    return connect(
        f"wss://127.0.0.1:{replica.visitor_port}/v1/namespaces/{ns}/sandboxes/{name}/{sub}"
        + (f"?{urlencode(query)}" if query else ""),
        subprotocols=[V5, bearer(token)],  # type: ignore[list-item]
        origin=origin,  # type: ignore[arg-type]
        ssl=gw.visitor_context(),
        server_hostname=VISITOR_NAME,
        open_timeout=30,
        compression=None,
        proxy=None,
    )


def refused(opening: Any) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of a refused WebSocket handshake."""
    with pytest.raises(InvalidStatus) as caught:
        opening()
    response = caught.value.response
    return response.status_code, json.loads(response.body or b"{}")


@dataclass
class Outcome:
    stdout: bytes
    stderr: bytes
    status: dict[str, Any]


def finish(ws: ClientConnection, stdin: bytes | None = None) -> Outcome:
    """Send `stdin` (then close it), collect stdout, stderr and the status until the close."""
    if stdin is not None:
        if stdin:
            ws.send(b"\x00" + stdin)
        ws.send(b"\xff\x00")
    out, err, status = b"", b"", {}
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            frame = ws.recv(timeout=max(0.1, deadline - time.monotonic()))
            assert isinstance(frame, bytes), frame
            channel, data = frame[0], frame[1:]
            if channel == 1:
                out += data
            elif channel == 2:
                err += data
            elif channel == 3:
                status = json.loads(data)
    except ConnectionClosed:
        pass
    return Outcome(out, err, status)


def exit_code(status: dict[str, Any]) -> int:
    if status.get("status") == "Success":
        return 0
    (cause,) = status["details"]["causes"]
    assert cause["reason"] == "ExitCode"
    return int(cause["message"])


def read_until(
    ws: ClientConnection, needle: bytes, seen: bytearray | None = None, timeout: float = 60
) -> bytes:
    """Terminal output (channel 1) until `needle` shows; all of it."""
    got = seen if seen is not None else bytearray()
    deadline = time.monotonic() + timeout
    while needle not in got:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"{needle!r} never came; the terminal showed:\n{bytes(got)!r}"
        frame = ws.recv(timeout=remaining)
        assert isinstance(frame, bytes)
        if frame[:1] == b"\x01":
            got += frame[1:]
    return bytes(got)


def mint(
    person: Person, ns: str, name: str, scopes: list[str], seconds: int | None = None
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"apiVersion": "subresources.tux.io/v1alpha1", "kind": "SandboxToken",
                            "spec": {"scopes": scopes}}  # fmt: skip
    if seconds is not None:
        body["spec"]["expirationSeconds"] = seconds
    path = RUN_DIR / f"token-request-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(body))
    code, out = person.kubectl(
        "create", "--raw", f"{API}/namespaces/{ns}/sandboxes/{name}/token", "-f", str(path)
    )
    path.unlink()
    return code, (json.loads(out) if code == 0 else {"error": out})


# ----- the tests ----------------------------------------------------------------------------


def test_discovery(cluster: Cluster, gateway: Gateway) -> None:
    versions = cluster.kubectl("api-versions").stdout.split()
    assert "subresources.tux.io/v1alpha1" in versions
    resources = json.loads(cluster.kubectl("get", "--raw", API).stdout)
    assert {r["name"]: r["verbs"] for r in resources["resources"]} == {
        "sandboxes/exec": ["get"],
        "sandboxes/terminal": ["get", "delete"],
        "sandboxes/files": ["get", "update", "delete"],
        "sandboxes/token": ["create"],
    }
    # Aggregated discovery (what kubectl reads first) carries them as subresources of sandboxes.
    aggregated = json.loads(cluster.kubectl(
        "get", "--raw", "/apis", "-v=0", "--request-timeout=30s",
    ).stdout)  # fmt: skip
    assert any(g["name"] == "subresources.tux.io" for g in aggregated["groups"])
    # kubectl api-resources lists top-level resources only (client-go's discovery skips names
    # with a slash): it must succeed with the group registered, and show no error about it.
    listed = cluster.kubectl("api-resources", "--api-group=subresources.tux.io", check=False)
    assert listed.returncode == 0 and "subresources.tux.io" not in listed.stderr, listed.stderr


def test_view_gets_403_from_the_api_server_get_only_from_the_gateway_edit_gets_in(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, gateway: Gateway, tls_host: Host,
    namespace: str, people: People,
) -> None:  # fmt: skip
    running_sandbox(cluster, custom, namespace, "box")
    query = [("command", "id"), ("stdout", "true"), ("stderr", "true")]
    code, body = refused(
        lambda: through_api(cluster, people.viewer, namespace, "box", "exec", query)
    )
    assert code == 403, body
    # The API server's own words: it authorised the verb of the request (GET) and said no.
    assert (
        'cannot get resource "sandboxes/exec" in API group "subresources.tux.io"' in body["message"]
    )
    code, body = refused(
        lambda: through_api(cluster, people.getter, namespace, "box", "exec", query)
    )
    assert code == 403, body
    # The gateway's: its SubjectAccessReview for `create` said no.
    assert 'cannot create resource "sandboxes/exec"' in body["message"], body
    with through_api(cluster, people.editor, namespace, "box", "exec", query) as ws:
        assert ws.subprotocol == V5
        outcome = finish(ws)
    assert b"uid=0(root)" in outcome.stdout
    assert exit_code(outcome.status) == 0
    code, out = people.viewer.kubectl(
        "create", "--raw", f"{API}/namespaces/{namespace}/sandboxes/box/token", "-f", "/dev/null"
    )
    assert code != 0 and "Forbidden" in out, out


def test_exec_through_the_api_server(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, gateway: Gateway, tls_host: Host,
    namespace: str, people: People,
) -> None:  # fmt: skip
    running_sandbox(cluster, custom, namespace, "runner")
    query = [("command", "sh"), ("command", "-c"), ("command", "echo out; echo err >&2; exit 3"),
             ("stdout", "true"), ("stderr", "true")]  # fmt: skip
    with through_api(cluster, people.editor, namespace, "runner", "exec", query) as ws:
        outcome = finish(ws)
    assert (outcome.stdout, outcome.stderr) == (b"out\n", b"err\n")
    assert exit_code(outcome.status) == 3
    assert outcome.status["reason"] == "NonZeroExitCode"
    data = secrets.token_bytes(100_000)
    query = [
        ("command", "wc"),
        ("command", "-c"),
        ("stdin", "true"),
        ("stdout", "true"),
        ("stderr", "true"),
    ]
    with through_api(cluster, people.editor, namespace, "runner", "exec", query) as ws:
        outcome = finish(ws, stdin=data)
    assert outcome.stdout.strip() == str(len(data)).encode()
    assert exit_code(outcome.status) == 0


def test_files_through_the_api_server(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, gateway: Gateway, tls_host: Host,
    namespace: str, people: People,
) -> None:  # fmt: skip
    running_sandbox(cluster, custom, namespace, "filer")
    files = f"{API}/namespaces/{namespace}/sandboxes/filer/files"
    content = RUN_DIR / f"upload-{uuid.uuid4().hex[:6]}.txt"
    content.write_text("written through the API server\n")
    code, out = people.editor.kubectl(
        "replace", "--raw", f"{files}?path=/root/hello.txt", "-f", str(content)
    )
    assert code == 0, out
    assert json.loads(out)["size"] == content.stat().st_size
    code, out = people.editor.kubectl("get", "--raw", f"{files}?path=/root/hello.txt")
    assert (code, out) == (0, "written through the API server\n")
    code, out = people.editor.kubectl("get", "--raw", f"{files}?path=/root")
    assert code == 0 and "hello.txt" in [i["name"] for i in json.loads(out)["items"]], out
    code, out = people.viewer.kubectl("get", "--raw", f"{files}?path=/root/hello.txt")
    assert code != 0 and "Forbidden" in out, out
    code, out = people.editor.kubectl("get", "--raw", f"{files}?path=/../etc/shadow")
    assert code != 0, out
    code, out = people.editor.kubectl("delete", "--raw", f"{files}?path=/root/hello.txt")
    assert code == 0, out
    code, out = people.editor.kubectl("get", "--raw", f"{files}?path=/root/hello.txt")
    assert code != 0 and "NotFound" in out, out
    content.unlink()


def test_the_official_client_streams_through_the_gateway(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, gateway: Gateway, tls_host: Host,
    namespace: str, people: People,
) -> None:  # fmt: skip
    """kubernetes.stream's WSClient, unchanged: it offers v5 and v4 and speaks what is agreed."""
    running_sandbox(cluster, custom, namespace, "official")
    server, _ = api_server(cluster)
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(people.editor.kubeconfig), client_configuration=config
    )
    query = urlencode([("command", "sh"), ("command", "-c"), ("command", "cat; echo done >&2; exit 7"),
                       ("stdin", "true"), ("stdout", "true"), ("stderr", "true")])  # fmt: skip
    client = WSClient(
        config,
        f"{server}{API}/namespaces/{namespace}/sandboxes/official/exec?{query}",
        headers={"authorization": config.get_api_key_with_prefix("BearerToken")},
        capture_all=True,
    )
    try:
        assert client.subprotocol == V5
        client.write_stdin("through the front door\n")
        client.close_channel(0)  # v5: half-close of stdin
        client.run_forever(timeout=60)
        assert client.read_stdout() == "through the front door\n"
        assert client.read_stderr() == "done\n"
        assert client.returncode == 7
    finally:
        client.close()
        # websocket-client's close() sends nothing and closes nothing once the server has
        # closed (it is no longer "connected"): its socket is closed here.
        client.sock.shutdown()


def test_visitor_tokens(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, gateway: Gateway, tls_host: Host,
    namespace: str, people: People,
) -> None:  # fmt: skip
    first = running_sandbox(cluster, custom, namespace, "visitor-a")
    running_sandbox(cluster, custom, namespace, "visitor-b")
    code, made = mint(people.editor, namespace, "visitor-a", ["terminal", "files"], seconds=600)
    assert code == 0, made
    assert made["metadata"] == {
        "name": "visitor-a",
        "namespace": namespace,
        "uid": first["metadata"]["uid"],
    }
    token = made["status"]["token"]
    replica = gateway.replicas[0]
    with visitor(gateway, replica, namespace, "visitor-a", token) as ws:
        ws.send(b"\x00echo $((6*7))-visitor\r")
        read_until(ws, b"42-visitor")
    # The same token for the other sandbox, for a scope it lacks, from a page not listed.
    code, body = refused(lambda: visitor(gateway, replica, namespace, "visitor-b", token))
    assert code == 403 and f"for sandbox {namespace}/visitor-a" in body["message"], body
    code, body = refused(lambda: visitor(gateway, replica, namespace, "visitor-a", token, sub="exec",
                                         query=[("command", "id"), ("stdout", "true")]))  # fmt: skip
    assert code == 403 and "does not grant 'exec'" in body["message"], body
    code, body = refused(
        lambda: visitor(
            gateway, replica, namespace, "visitor-a", token, origin="https://evil.example"
        )
    )
    assert code == 403 and "not allowed" in body["message"], body
    # Forged: the claims changed, the signature kept; and signed with a key the gateway never had.
    header, claims, _ = token.split(".")
    other = json.loads(base64.urlsafe_b64decode(claims + "=="))
    other["name"] = "visitor-b"
    forged = ".".join(
        [
            header,
            base64.urlsafe_b64encode(json.dumps(other).encode()).decode().rstrip("="),
            token.split(".")[2],
        ]
    )
    wrong_key = jwt.encode(jwt.decode(token, options={"verify_signature": False}), Ed25519PrivateKey.generate(),
                           algorithm="EdDSA", headers={"kid": jwt.get_unverified_header(token)["kid"]})  # fmt: skip
    for bad in (forged, wrong_key, "not-a-token"):
        code, body = refused(lambda bad=bad: visitor(gateway, replica, namespace, "visitor-a", bad))
        assert code == 401 and body["reason"] == "Unauthorized", body
    # Files with the token as a bearer header.
    import httpx

    with httpx.Client(verify=gateway.visitor_context(), timeout=30) as http:
        url = f"https://127.0.0.1:{replica.visitor_port}/v1/namespaces/{namespace}/sandboxes/visitor-a/files"
        sni = {"sni_hostname": VISITOR_NAME}
        put = http.put(url, params={"path": "/tmp/v.txt"}, content=b"visitor file",
                       headers={"Authorization": f"Bearer {token}", "Origin": ORIGIN}, extensions=sni)  # fmt: skip
        assert put.status_code == 200, put.text
        got = http.get(url, params={"path": "/tmp/v.txt"}, headers={"Authorization": f"Bearer {token}",
                       "Origin": ORIGIN}, extensions=sni)  # fmt: skip
        assert (got.status_code, got.content) == (200, b"visitor file")
        assert got.headers["Access-Control-Allow-Origin"] == ORIGIN
    # Expired: a token of one second, refused once that second is over.
    code, short = mint(people.editor, namespace, "visitor-a", ["terminal"], seconds=1)
    assert code == 0, short

    def expired() -> bool:
        try:
            with visitor(gateway, replica, namespace, "visitor-a", short["status"]["token"]):
                pass
        except InvalidStatus as exc:
            body = json.loads(exc.response.body or b"{}")
            return exc.response.status_code == 401 and "expired" in body["message"]
        return False

    wait_until(expired, timeout=60, interval=0.5)
    # A namesake: deleted and created again, the old token is refused.
    cluster.kubectl(
        "delete", "sandbox", "visitor-a", "-n", namespace, "--wait=true", "--timeout=60s"
    )
    again = running_sandbox(cluster, custom, namespace, "visitor-a")
    assert again["metadata"]["uid"] != first["metadata"]["uid"]
    code, body = refused(lambda: visitor(gateway, replica, namespace, "visitor-a", token))
    assert code == 403 and "earlier sandbox" in body["message"], body


def _signing_key(gw: Gateway, *args: str) -> str:
    done = subprocess.run([GATEWAY, "signing-key", *args], env=gw.admin_env, capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_signing_key_rotation(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, gateway: Gateway, tls_host: Host,
    namespace: str, people: People,
) -> None:  # fmt: skip
    running_sandbox(cluster, custom, namespace, "rotating")
    _, before = mint(people.editor, namespace, "rotating", ["terminal"])
    old_token = before["status"]["token"]
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    _signing_key(gateway, "rotate")
    listed = _signing_key(gateway, "list")
    (current,) = [line.split()[0] for line in listed.splitlines() if "(current)" in line]
    assert current != old_kid and old_kid in listed

    def new_token() -> str | None:  # minted by whichever replica; both learn the key by watch
        _, made = mint(people.editor, namespace, "rotating", ["terminal"])
        token = made["status"]["token"]
        return token if jwt.get_unverified_header(token)["kid"] == current else None

    token = wait_until(new_token, timeout=60, interval=0.5)
    assert isinstance(token, str)
    for replica in gateway.replicas:  # both keys work at both replicas while rotating
        for each in (old_token, token):
            with visitor(gateway, replica, namespace, "rotating", each) as ws:
                assert ws.subprotocol == V5
    _signing_key(gateway, "remove", old_kid)

    def old_refused(replica: Replica) -> bool:
        try:
            with visitor(gateway, replica, namespace, "rotating", old_token):
                pass
        except InvalidStatus as exc:
            return exc.response.status_code == 401
        return False

    for replica in gateway.replicas:
        wait_until(lambda replica=replica: old_refused(replica), timeout=60, interval=0.5)
        with visitor(gateway, replica, namespace, "rotating", token) as ws:
            assert ws.subprotocol == V5


def _carrier(gw: Gateway, session: str) -> Replica | None:
    for replica in gw.replicas:
        if f"session {session}" in replica.log.read_text(errors="replace"):
            return replica
    return None


def test_a_killed_replica_loses_nothing_a_reconnect_cannot_resume(
    cluster: Cluster, custom: kubernetes.client.CustomObjectsApi, gateway: Gateway, tls_host: Host,
    namespace: str, people: People,
) -> None:  # fmt: skip
    running_sandbox(cluster, custom, namespace, "survivor")
    session = uuid.uuid4().hex
    with through_api(
        cluster, people.editor, namespace, "survivor", "terminal", [("session", session)]
    ) as ws:
        assert ws.response is not None
        assert ws.response.headers["X-Tuxio-Session-State"] == "created"
        ws.send(b"\x00export MARK=kept-$((1000+337)); echo $((6*7))-before\r")
        read_until(ws, b"42-before")
        carrier = wait_until(lambda: _carrier(gateway, session), timeout=30)
        assert isinstance(carrier, Replica)
        carrier.stop(signal.SIGKILL)
        # What the endpoints controller does for a dead pod: its endpoint is no longer ready.
        _publish_each(gateway, ready={carrier.name: False})
        with pytest.raises(ConnectionClosed):
            _drain(ws)
    try:
        again = wait_until(
            lambda: _reconnect(cluster, people.editor, namespace, session), timeout=60, interval=0.5
        )
        assert isinstance(again, ClientConnection)
        with again:
            assert again.response is not None
            assert again.response.headers["X-Tuxio-Session-State"] == "resumed"
            assert again.response.headers["X-Tuxio-Session"] == session
            seen = bytearray()
            read_until(again, b"42-before", seen)  # the replay of the screen
            again.send(b"\x00echo $MARK\r")
            read_until(again, b"kept-1337", seen)  # the shell's state
        survivor = next(r for r in gateway.replicas if r is not carrier)
        assert f"session {session}" in survivor.log.read_text(errors="replace")
    finally:
        carrier.start()
        _publish_each(gateway)


def _drain(ws: ClientConnection) -> None:
    """Read until the connection ends (it raises ConnectionClosed then)."""
    while True:
        ws.recv(timeout=60)


def _reconnect(cluster: Cluster, person: Person, ns: str, session: str) -> ClientConnection | None:
    try:
        return through_api(cluster, person, ns, "survivor", "terminal", [("session", session)])
    except InvalidStatus as exc:
        if exc.response.status_code in (502, 503):  # the API server's view of its endpoints lags
            return None
        raise
