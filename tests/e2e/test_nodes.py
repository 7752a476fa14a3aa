"""Node registration against the real API server: a Node labelled tux.io/lxc-host=true gets a
SandboxHost that points at the agent on it, with its own credentials: the agent's bootstrap
asks for a certificate with a CertificateSigningRequest, the operator signs it for that node
only and writes the host's own token into the host's own Secret; the host turns Ready over TLS
verified with the CA of hack/create-agent-secrets.sh, and stays Ready while the credentials
rotate. Cordoning, unlabelling and deleting the Node follow.

A Node object needs no kubelet: the test makes one whose InternalIP is 127.0.0.1, where an
agent listens, and a Pod object bound to it (never run) to which the bootstrap's
ServiceAccount token is bound, as the kubelet's projected token is. The operator runs with
node registration on (the session's operator is paused meanwhile: never two operators on one
cluster).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

from tests.e2e.conftest import (
    GROUP,
    ROOT,
    SYSTEM_NS,
    VERSION,
    Cluster,
    Operator,
    operator_in_place_of,
    sandbox,
    wait_phase,
)
from tests.support import (
    AGENT,
    Agent,
    destroy_everything,
    free_port,
    prepare_data_dir,
    wait_until,
)

NODE = "lxc-node-1"
BOOTSTRAP_SA = "tuxio-agent-bootstrap"
Custom = kubernetes.client.CustomObjectsApi


def secret_data(core: kubernetes.client.CoreV1Api, name: str) -> dict[str, str]:
    found = core.read_namespaced_secret(name, SYSTEM_NS)
    return {k: base64.b64decode(v).decode() for k, v in found.data.items()}


@pytest.fixture(scope="module")
def agent_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def agent_ca(cluster: Cluster, core: kubernetes.client.CoreV1Api) -> str:
    """The CA Secret of hack/create-agent-secrets.sh and the bootstrap's ServiceAccount and
    role from the manifests; the CA's certificate."""
    env = {
        **os.environ,
        **cluster.env,
        "PATH": f"{cluster.kubectl_bin.parent}:{os.environ['PATH']}",
    }
    made = subprocess.run(
        [str(ROOT / "hack" / "create-agent-secrets.sh")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    cluster.kubectl(
        "apply", "-f", str(ROOT / "manifests" / "base" / "nodeagent" / "bootstrap_rbac.yaml")
    )
    for node in (NODE, "lxc-node-2"):  # hosts' Secrets an earlier run left
        cluster.kubectl(
            "delete", "secret", f"tuxio-agent-{node}", "-n", SYSTEM_NS, "--ignore-not-found"
        )
    return secret_data(core, "tuxio-agent-ca")["ca.crt"]


def api_server(cluster: Cluster) -> tuple[str, Path]:
    """The API server's URL and a file with its CA, from the admin kubeconfig."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())["clusters"][0]["cluster"]
    ca = cluster.kubeconfig.with_name("bootstrap-api-ca.crt")
    if "certificate-authority-data" in config:
        ca.write_bytes(base64.b64decode(config["certificate-authority-data"]))
    else:
        ca = Path(config["certificate-authority"])
    return config["server"], ca


def pod_token(cluster: Cluster, node: str | None) -> str:
    """A token of the bootstrap's ServiceAccount bound to a Pod on `node` (None: a token bound
    to nothing, as anyone holding the account could ask for)."""
    request: dict[str, Any] = {"audiences": [], "expirationSeconds": 3600}
    if node is not None:
        pod = f"tuxio-agent-{node}"
        cluster.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": SYSTEM_NS},
                "spec": {
                    "nodeName": node,
                    "serviceAccountName": BOOTSTRAP_SA,
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "agent", "image": "tuxio-agent:0.1.0"}],
                },
            }
        )
        uid = cluster.kubectl(
            "get", "pod", pod, "-n", SYSTEM_NS, "-o", "jsonpath={.metadata.uid}"
        ).stdout
        request["boundObjectRef"] = {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid}
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": request}
    answer = cluster.kubectl(
        "create", "--raw",
        f"/api/v1/namespaces/{SYSTEM_NS}/serviceaccounts/{BOOTSTRAP_SA}/token",
        "-f", "-", stdin=json.dumps(body),
    )  # fmt: skip
    return str(json.loads(answer.stdout)["status"]["token"])


def bootstrap(
    cluster: Cluster, node: str | None, hosts: list[str], out: Path
) -> subprocess.CompletedProcess[str]:
    """`tuxio-agent credentials bootstrap` as the DaemonSet's init container runs it."""
    server, ca = api_server(cluster)
    token = out.parent / f"{out.name}-api-token"
    token.write_text(pod_token(cluster, node))
    argv = [
        AGENT, "credentials", "bootstrap", "--dir", str(out), "--api-server", server,
        "--api-token-file", str(token), "--api-ca", str(ca), "--timeout", "120",
    ]  # fmt: skip
    for host in hosts:
        argv += ["--host", host]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=180)


@pytest.fixture(scope="module")
def node_operator(
    cluster: Cluster, operator: Operator, agent_ca: str, agent_port: int
) -> Iterator[Operator]:
    """The operator with node registration on, in place of the session's one."""
    env = {
        "TUXIO_OPERATOR_NODE_HOSTS": "true",
        "TUXIO_OPERATOR_NODE_AGENT_PORT": str(agent_port),
    }
    with operator_in_place_of(operator, "operator-nodes.log", env) as running:
        try:
            yield running
        finally:
            for name in (NODE, "lxc-node-2"):
                cluster.kubectl("delete", "node", name, "--ignore-not-found")
                cluster.kubectl(
                    "delete", "pod", f"tuxio-agent-{name}", "-n", SYSTEM_NS,
                    "--ignore-not-found", "--wait=false",
                )  # fmt: skip
            if running.proc is None:
                running.start()
            wait_until(lambda: not registered_hosts(cluster), timeout=30)


def make_node(cluster: Cluster, name: str, address: str, labels: dict[str, str]) -> None:
    cluster.kubectl("delete", "node", name, "--ignore-not-found")
    cluster.apply(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": labels}}
    )
    set_address(cluster, name, address)


def set_address(cluster: Cluster, name: str, address: str) -> None:
    """What the kubelet reports in the Node's status; here the test does."""
    status = {"status": {"addresses": [{"type": "InternalIP", "address": address}]}}
    cluster.kubectl(
        "patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )


@pytest.fixture
def plain_namespace(cluster: Cluster) -> Iterator[str]:
    """A namespace of this module's own: the session's `namespace` fixture would restart the
    session's operator next to this module's."""
    name = f"nodes-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl(
        "delete", "sandboxes", "--all", "-n", name, "--wait=true", "--timeout=60s", check=False
    )
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def get_host(custom: Custom, name: str) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = custom.get_cluster_custom_object(
            GROUP, VERSION, "sandboxhosts", name
        )
    except kubernetes.client.exceptions.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return found


def registered_hosts(cluster: Cluster) -> list[str]:
    out = cluster.kubectl("get", "sandboxhosts", "-l", "tux.io/node", "-o", "name").stdout
    return out.split()


def served_certificate(port: int) -> str:
    return ssl.get_server_certificate(("127.0.0.1", port))


def answer_with(agent: Agent, token: str) -> int:
    with agent.client(token) as client:
        return client.get("/v1/host").status_code


def host_ready_since(custom: Custom) -> str | None:
    host = get_host(custom, NODE) or {}
    for condition in (host.get("status") or {}).get("conditions") or []:
        if condition["type"] == "Ready" and condition["status"] == "True":
            return str(condition["lastTransitionTime"])
    return None


def run_on_node(cluster: Cluster, custom: Custom, namespace: str, name: str) -> dict[str, Any]:
    cluster.apply(
        sandbox(name, template="busybox", placement={"hostSelector": {"tux.io/node": NODE}}),
        "-n",
        namespace,
    )
    body = wait_phase(custom, namespace, name, "Running")
    assert body["status"]["host"] == NODE
    return body


@pytest.fixture
def node_agent_dir() -> Iterator[Path]:
    made = prepare_data_dir("nodes")
    yield made
    shutil.rmtree(made, ignore_errors=True)  # also when no agent ran from it


def test_labelled_node_gets_its_own_credentials_and_a_ready_host(
    cluster: Cluster,
    core: kubernetes.client.CoreV1Api,
    custom: Custom,
    node_operator: Operator,
    agent_ca: str,
    agent_port: int,
    node_agent_dir: Path,
    plain_namespace: str,
) -> None:
    namespace = plain_namespace
    make_node(cluster, NODE, "127.0.0.1", {"tux.io/lxc-host": "true", "tux.io/test": "nodes"})
    host = wait_until(lambda: get_host(custom, NODE), timeout=30)
    assert isinstance(host, dict)
    assert host["spec"]["endpoint"] == f"https://127.0.0.1:{agent_port}"
    assert host["spec"]["credentialsSecretRef"] == {
        "name": f"tuxio-agent-{NODE}",
        "namespace": SYSTEM_NS,
        "tokenKey": "token",
        "caKey": "ca.crt",
    }
    assert host["metadata"]["labels"]["tux.io/node"] == NODE

    # The bootstrap: a key of its own, a request signed by the operator for this node.
    out = node_agent_dir / "credentials"
    made = bootstrap(cluster, NODE, ["127.0.0.1", NODE], out)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE((out / "tls.key").stat().st_mode) == 0o600
    first = (out / "token").read_text().split()
    assert len(first) == 1
    secret = secret_data(core, f"tuxio-agent-{NODE}")
    assert (secret["token"], secret["ca.crt"]) == (first[0], agent_ca)
    assert "ca.key" not in secret and "previous-token" not in secret
    request = json.loads(made.stdout)["request"]
    csr = json.loads(cluster.kubectl("get", "csr", request, "-o", "json").stdout)
    assert [c["type"] for c in csr["status"]["conditions"]] == ["Approved"]
    assert csr["spec"]["extra"]["authentication.kubernetes.io/node-name"] == [NODE]

    agent = Agent(
        node_agent_dir,
        agent_port,
        first[0],
        [
            "--listen", "127.0.0.1", "--token-file", str(out / "token"),
            "--tls-cert", str(out / "tls.crt"), "--tls-key", str(out / "tls.key"),
        ],
        scheme="https",
        verify=ssl.create_default_context(cadata=agent_ca),
    )  # fmt: skip
    agent.start()
    try:
        # Ready: the operator read the host's own token and CA and the certificate passed.
        wait_until(lambda: host_ready_since(custom) is not None, timeout=30)
        body = run_on_node(cluster, custom, namespace, "on-node")
        with agent.client() as client:
            seen = client.get(f"/v1/containers/{body['status']['containerName']}")
        assert seen.status_code == 200 and seen.json()["state"] == "running"

        # Two rotations while the agent runs: each a new certificate and a new token, the
        # old one still taken; after the second the operator's token (the first) is refused,
        # and it reads the host's Secret again. The operator never misses an answer.
        tokens, certificates = [first[0]], [served_certificate(agent_port)]
        log_before = node_operator.log.read_text()
        for round_ in (1, 2):
            renewed = bootstrap(cluster, NODE, ["127.0.0.1", NODE], out)
            assert renewed.returncode == 0, renewed.stderr
            now = (out / "token").read_text().split()
            assert now[1:] == [tokens[-1]] and now[0] not in tokens
            tokens.append(now[0])
            secret = secret_data(core, f"tuxio-agent-{NODE}")
            assert (secret["token"], secret["previous-token"]) == (tokens[-1], tokens[-2])
            wait_until(lambda: served_certificate(agent_port) not in certificates, timeout=30)
            certificates.append(served_certificate(agent_port))
            # The agent reads its token file again within a second of a change.
            expected = {tokens[-1]: 200, tokens[-2]: 200}
            if round_ == 2:
                expected[tokens[0]] = 401  # two rotations old: dropped
            for token, status in expected.items():
                wait_until(lambda t=token, c=status: answer_with(agent, t) == c, timeout=30)
            run_on_node(cluster, custom, namespace, f"after-rotation-{round_}")
        assert agent.proc is not None and agent.proc.poll() is None  # never restarted
        during = node_operator.log.read_text()[len(log_before) :]
        assert "did not answer" not in during and "CredentialsMissing" not in during
        assert host_ready_since(custom) is not None
        cluster.kubectl("delete", "sandboxes", "--all", "-n", namespace, "--timeout=60s")
    finally:
        agent.stop()
        destroy_everything(agent)


def test_an_agent_gets_no_certificate_for_another_node(
    cluster: Cluster,
    custom: Custom,
    node_operator: Operator,
    agent_ca: str,
    node_agent_dir: Path,
) -> None:
    """The attack a per-host credential is for: a compromised host asking for another's
    address, or someone with the bootstrap account but no pod on a node. Denied, with why."""
    make_node(cluster, NODE, "127.0.0.1", {"tux.io/lxc-host": "true"})
    make_node(cluster, "lxc-node-2", "127.0.0.2", {"tux.io/lxc-host": "true"})
    cases = [
        ("lxc-node-2", ["127.0.0.1"], "127.0.0.1: not a name or address of node lxc-node-2"),
        ("lxc-node-2", [NODE], f"{NODE}: not a name or address of node lxc-node-2"),
        (None, ["127.0.0.1"], "not bound to a pod on a node"),
    ]
    for i, (node, hosts, reason) in enumerate(cases):
        refused = bootstrap(cluster, node, hosts, node_agent_dir / f"try-{i}")
        assert refused.returncode != 0
        assert "Denied" in refused.stderr and reason in refused.stderr, refused.stderr
        assert not (node_agent_dir / f"try-{i}" / "tls.crt").exists()
    found = cluster.kubectl("get", "secret", "tuxio-agent-lxc-node-2", "-n", SYSTEM_NS,
                            check=False)  # fmt: skip
    assert "NotFound" in found.stderr
    # The bootstrap account may ask, and nothing more: no Secret, no approval.
    who = f"system:serviceaccount:{SYSTEM_NS}:{BOOTSTRAP_SA}"
    for args, allowed in (
        (("create", "certificatesigningrequests"), "yes"),
        (("get", "secrets", "-n", SYSTEM_NS), "no"),
        (("update", "certificatesigningrequests", "--subresource=approval"), "no"),
        (("approve", "signers", "--all-namespaces"), "no"),
    ):
        asked = cluster.kubectl("auth", "can-i", *args, "--as", who, check=False)
        assert asked.stdout.strip() == allowed, args
    # The second node and its host go, so later tests find the name free.
    cluster.kubectl("delete", "node", "lxc-node-2")
    wait_until(lambda: get_host(custom, "lxc-node-2") is None, timeout=60)


def test_cordon_label_and_deletion_follow_the_node(
    cluster: Cluster, custom: Custom, node_operator: Operator
) -> None:
    make_node(cluster, NODE, "127.0.0.1", {"tux.io/lxc-host": "true"})
    wait_until(lambda: get_host(custom, NODE), timeout=30)
    # Fields set by others are theirs: the operator's applies leave them.
    cluster.kubectl(
        "patch", "sandboxhost", NODE, "--type=merge", "-p", '{"spec":{"maxSandboxes":7}}'
    )

    cluster.kubectl("cordon", NODE)
    wait_until(lambda: (get_host(custom, NODE) or {})["spec"].get("unschedulable"), timeout=30)
    cluster.kubectl("uncordon", NODE)
    wait_until(lambda: not (get_host(custom, NODE) or {})["spec"]["unschedulable"], timeout=30)
    assert (get_host(custom, NODE) or {})["spec"]["maxSandboxes"] == 7

    # Another address: the endpoint follows.
    set_address(cluster, NODE, "127.0.0.2")
    wait_until(lambda: "127.0.0.2" in (get_host(custom, NODE) or {})["spec"]["endpoint"], 30)

    cluster.kubectl("label", "node", NODE, "tux.io/lxc-host-")
    wait_until(lambda: get_host(custom, NODE) is None, timeout=30)
    cluster.kubectl("label", "node", NODE, "tux.io/lxc-host=true")
    wait_until(lambda: get_host(custom, NODE), timeout=30)
    cluster.kubectl("delete", "node", NODE)
    wait_until(lambda: get_host(custom, NODE) is None, timeout=30)


def test_host_of_a_node_deleted_while_the_operator_was_down_is_swept(
    cluster: Cluster, custom: Custom, node_operator: Operator
) -> None:
    make_node(cluster, NODE, "127.0.0.1", {"tux.io/lxc-host": "true"})
    wait_until(lambda: get_host(custom, NODE), timeout=30)
    node_operator.stop()
    cluster.kubectl("delete", "node", NODE)
    assert get_host(custom, NODE) is not None
    node_operator.start()
    wait_until(lambda: get_host(custom, NODE) is None, timeout=30)


def test_hand_registered_host_of_the_same_name_is_left_alone(
    cluster: Cluster, custom: Custom, node_operator: Operator
) -> None:
    name = "lxc-node-2"
    manual = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SandboxHost",
        "metadata": {"name": name},
        "spec": {
            "endpoint": "https://by-hand.example.org:7443",
            "credentialsSecretRef": {"name": "by-hand", "namespace": SYSTEM_NS},
            "unschedulable": True,
        },
    }
    cluster.apply(manual)
    try:
        make_node(cluster, name, "127.0.0.1", {"tux.io/lxc-host": "true"})
        # The operator says so in its log once it has seen the Node.
        wait_until(
            lambda: (
                f"SandboxHost {name} was not registered for this node"
                in node_operator.log.read_text()
            ),
            timeout=30,
        )
        found = get_host(custom, name)
        assert found is not None
        assert found["spec"]["endpoint"] == "https://by-hand.example.org:7443"
        assert "tux.io/node" not in (found["metadata"].get("labels") or {})
    finally:
        cluster.kubectl("delete", "sandboxhost", name, "--ignore-not-found", "--timeout=60s")
