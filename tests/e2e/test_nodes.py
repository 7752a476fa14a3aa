"""Node registration against the real API server: a Node labelled tux.io/lxc-host=true gets a
SandboxHost that points at the agent on it, over TLS verified with the CA of the tuxio-agent
Secret; cordoning, unlabelling and deleting the Node follow.

A Node object needs no kubelet: the test makes one whose InternalIP is 127.0.0.1, where an
agent listens with a certificate issued as the DaemonSet's init container issues it, with
the Secrets hack/create-agent-secrets.sh makes. The operator runs with node registration on
(the session's operator is paused meanwhile: never two operators on one cluster).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest

from tests.e2e.conftest import (
    GROUP,
    ROOT,
    SYSTEM_NS,
    VERSION,
    Cluster,
    Operator,
    condition_status,
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
Custom = kubernetes.client.CustomObjectsApi


def secret_data(core: kubernetes.client.CoreV1Api, name: str) -> dict[str, str]:
    found = core.read_namespaced_secret(name, SYSTEM_NS)
    return {k: base64.b64decode(v).decode() for k, v in found.data.items()}


@pytest.fixture(scope="module")
def node_agent(cluster: Cluster, core: kubernetes.client.CoreV1Api) -> Iterator[Agent]:
    """An agent as the DaemonSet runs it: the token and a certificate from the Secrets."""
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
    token, ca = secret_data(core, "tuxio-agent"), secret_data(core, "tuxio-agent-ca")
    assert token["ca.crt"] == ca["ca.crt"]
    data_dir = prepare_data_dir("nodes")
    (data_dir / "token").write_text(token["token"])
    for key in ("ca.crt", "ca.key"):
        (data_dir / key).write_text(ca[key])
    cert, key = data_dir / "tls.crt", data_dir / "tls.key"
    issued = subprocess.run(
        [
            AGENT, "tls", "generate", "--cert", str(cert), "--key", str(key),
            "--ca-cert", str(data_dir / "ca.crt"), "--ca-key", str(data_dir / "ca.key"),
            "--host", "127.0.0.1", "--host", NODE,
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    agent = Agent(
        data_dir,
        free_port(),
        token["token"].strip(),
        ["--listen", "127.0.0.1", "--tls-cert", str(cert), "--tls-key", str(key)],
        scheme="https",
        verify=ssl.create_default_context(cadata=token["ca.crt"]),
    )
    agent.start()
    yield agent
    agent.stop()
    destroy_everything(agent)


@pytest.fixture(scope="module")
def node_operator(cluster: Cluster, operator: Operator, node_agent: Agent) -> Iterator[Operator]:
    """The operator with node registration on, in place of the session's one."""
    env = {
        "TUXIO_OPERATOR_NODE_HOSTS": "true",
        "TUXIO_OPERATOR_NODE_AGENT_PORT": str(node_agent.port),
    }
    with operator_in_place_of(operator, "operator-nodes.log", env) as running:
        try:
            yield running
        finally:
            for name in (NODE, "lxc-node-2"):
                cluster.kubectl("delete", "node", name, "--ignore-not-found")
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


def test_labelled_node_gets_a_ready_host_that_runs_sandboxes(
    cluster: Cluster,
    custom: Custom,
    node_operator: Operator,
    node_agent: Agent,
    plain_namespace: str,
) -> None:
    namespace = plain_namespace
    make_node(cluster, NODE, "127.0.0.1", {"tux.io/lxc-host": "true", "tux.io/test": "nodes"})
    host = wait_until(lambda: get_host(custom, NODE), timeout=30)
    assert isinstance(host, dict)
    assert host["spec"]["endpoint"] == f"https://127.0.0.1:{node_agent.port}"
    assert host["spec"]["credentialsSecretRef"] == {
        "name": "tuxio-agent",
        "namespace": SYSTEM_NS,
        "tokenKey": "token",
        "caKey": "ca.crt",
    }
    assert host["metadata"]["labels"]["tux.io/node"] == NODE
    # Ready: the operator read the token and CA and the agent's certificate passed.
    wait_until(lambda: condition_status(get_host(custom, NODE) or {}, "Ready") == "True", 30)

    cluster.apply(
        sandbox("on-node", template="busybox", placement={"hostSelector": {"tux.io/node": NODE}}),
        "-n",
        namespace,
    )
    body = wait_phase(custom, namespace, "on-node", "Running")
    assert body["status"]["host"] == NODE
    with node_agent.client() as agent:
        seen = agent.get(f"/v1/containers/{body['status']['containerName']}")
    assert seen.status_code == 200 and seen.json()["state"] == "running"
    cluster.kubectl("delete", "sandbox", "on-node", "-n", namespace, "--timeout=60s")


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
