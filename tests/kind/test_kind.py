"""tuxio in kind, as users run it: the manifests of manifests/overlays/default with the images
built from the three Dockerfiles, the agent DaemonSet running LXC inside the kind node, the
operator registering that node as a SandboxHost, a sample Sandbox applied with kubectl, its
container's limits read back from its cgroups, an exec through the gateway, a clean delete."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlencode

import kubernetes
import yaml
from kubernetes.stream.ws_client import WSClient

from tests.kind.conftest import ROOT, SYSTEM_NS, TIMEOUT, Kind, containers, gone, ready
from tests.support import wait_until

LXCPATH = "/var/lib/tuxio/containers"
SAMPLE = ROOT / "manifests" / "samples" / "sandbox.yaml"
API = "/apis/subresources.tux.io/v1alpha1"
MEMORY = 256 * 1024 * 1024  # the sample's 256Mi
PIDS = 128  # the sample's pids
PLUGIN_DIR = Path(sys.executable).parent  # kubectl-tuxio, the package's console script


def sample() -> dict[str, object]:
    data: dict[str, object] = yaml.safe_load(SAMPLE.read_text())
    return data


def test_the_node_is_a_ready_sandbox_host(kind: Kind) -> None:
    ready(kind, f"node/{kind.node}")
    ready(kind, f"sandboxhost/{kind.node}")
    host = kind.get("sandboxhost", kind.node)
    node = kind.get("node", kind.node)
    internal = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
    assert host["spec"]["endpoint"] == f"https://{ipaddress.ip_address(internal)}:7443"
    assert "busybox" in host["status"]["templates"], host["status"]
    pods = kind.get("pods", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/name=tuxio-agent")["items"]
    assert [p["spec"]["nodeName"] for p in pods] == [kind.node]


def cgroup_mounts(kind: Kind) -> dict[str, tuple[str, Path]]:
    """Controller ("" for cgroup2) -> (root, mount point) of the cgroup filesystems the agent's
    container sees (/proc/self/mountinfo): a container's cgroup mount may have its own cgroup as
    its root, while /proc/PID/cgroup names the full path."""
    mounts: dict[str, tuple[str, Path]] = {}
    for line in kind.agent("cat", "/proc/self/mountinfo").splitlines():
        fields, _, tail = line.partition(" - ")
        fstype, _source, options = tail.split()[:3]
        root, point = fields.split()[3:5]
        if fstype == "cgroup2":
            mounts.setdefault("", (root, Path(point)))
        elif fstype == "cgroup":
            for option in options.split(","):
                mounts.setdefault(option, (root, Path(point)))
    return mounts


def cgroups_of(kind: Kind, container: str) -> dict[str, Path]:
    """Controller -> the cgroup directory of the container's init, as the node's kernel has
    it, read in the agent's container (which shares the node's cgroup filesystems)."""
    pid = kind.agent("lxc-info", "-P", LXCPATH, "-n", container, "-p", "-H").strip()
    assert pid.isdigit(), pid
    mounts = cgroup_mounts(kind)
    dirs: dict[str, Path] = {}
    for line in kind.agent("cat", f"/proc/{pid}/cgroup").splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        names = controllers.split(",") if hierarchy != "0" else ["cpuset", "memory", "pids"]
        for name in names:
            key = name if hierarchy != "0" else ""
            if key not in mounts or (hierarchy == "0" and name in dirs):
                continue
            root, point = mounts[key]
            relative = Path(path).relative_to(root) if root != "/" else Path(path.lstrip("/"))
            dirs[name] = point / relative
    return dirs


def cgroup_file(kind: Kind, dirs: dict[str, Path], controller: str, v1: str, v2: str) -> str:
    names = kind.agent("ls", str(dirs[controller])).split()
    return kind.agent("cat", str(dirs[controller] / (v1 if v1 in names else v2))).strip()


def test_a_sample_sandbox_is_boxed_in_and_deleted_cleanly(kind: Kind, namespace: str) -> None:
    kind.kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    name = str(sample()["metadata"]["name"])  # type: ignore[index]
    ready(kind, f"sandbox/{name}", namespace)
    status = kind.get("sandbox", name, "-n", namespace)["status"]
    assert status["phase"] == "Running"
    assert status["host"] == kind.node
    container = status["containerName"]
    assert container in containers(kind)

    dirs = cgroups_of(kind, container)
    memory = cgroup_file(kind, dirs, "memory", "memory.limit_in_bytes", "memory.max")
    assert int(memory) == MEMORY
    assert cgroup_file(kind, dirs, "pids", "pids.max", "pids.max") == str(PIDS)

    # The sample bursts on all shared cores for its first CPU seconds, then is narrowed: the
    # cgroup's cpuset is the one the status reports, whichever it is at the moment.
    def cpuset_matches() -> bool:
        now = kind.get("sandbox", name, "-n", namespace)["status"]["cpuset"]
        return cgroup_file(kind, dirs, "cpuset", "cpuset.cpus", "cpuset.cpus") == now

    wait_until(cpuset_matches, timeout=TIMEOUT, interval=1.0)

    kind.kubectl(
        "delete", "-n", namespace, "-f", str(SAMPLE), "--wait=true", f"--timeout={TIMEOUT:.0f}s"
    )
    assert gone(kind, container)
    assert kind.kubectl("get", "sandboxes", "-n", namespace, "-o", "name") == ""


def test_exec_through_the_gateway_with_the_official_client(kind: Kind, namespace: str) -> None:
    """kubernetes.stream's WSClient against the kind cluster's API server, which proxies
    sandboxes/exec to the gateway deployed in the cluster, which streams from the agent."""
    kind.kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    name = str(sample()["metadata"]["name"])  # type: ignore[index]
    ready(kind, f"sandbox/{name}", namespace)
    # An APIService's condition is Available (it has no Ready).
    ready(kind, "apiservice/v1alpha1.subresources.tux.io", condition="Available")
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(
        config_file=str(kind.kubeconfig), client_configuration=config
    )
    query = urlencode([("command", "sh"), ("command", "-c"),
                       ("command", "cat; grep Cpus_allowed_list /proc/self/status >&2; exit 5"),
                       ("stdin", "true"), ("stdout", "true"), ("stderr", "true")])  # fmt: skip
    server = config.host.replace("https://", "wss://")
    client = WSClient(
        config, f"{server}{API}/namespaces/{namespace}/sandboxes/{name}/exec?{query}", headers=None,
        capture_all=True,
    )  # fmt: skip
    try:
        client.write_stdin("hello from kind\n")
        client.close_channel(0)
        client.run_forever(timeout=TIMEOUT)
        assert client.read_stdout() == "hello from kind\n"
        assert client.read_stderr().startswith("Cpus_allowed_list:")
        assert client.returncode == 5
    finally:
        client.close()
        if client.sock is not None:
            client.sock.shutdown()


def test_kubectl_tuxio_exec_through_the_gateway(kind: Kind, namespace: str) -> None:
    """The `kubectl tuxio` plugin (this package's console script, found by kubectl on PATH)
    against the kind cluster: stdin in, stdout and stderr apart, the command's exit code."""
    kind.kubectl("apply", "-n", namespace, "-f", str(SAMPLE))
    name = str(sample()["metadata"]["name"])  # type: ignore[index]
    ready(kind, f"sandbox/{name}", namespace)
    env = {**os.environ, "PATH": f"{PLUGIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(
        [kind.kubectl_bin, "tuxio", "--kubeconfig", str(kind.kubeconfig), "-n", namespace,
         "exec", "-i", name, "--", "sh", "-c", "tr a-z A-Z; echo to-stderr >&2; exit 4"],
        input=b"piped through kind\n", capture_output=True, env=env, timeout=TIMEOUT, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (
        4,
        b"PIPED THROUGH KIND\n",
        b"to-stderr\n",
    )
