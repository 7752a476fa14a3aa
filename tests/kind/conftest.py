"""The kind tier: tuxio as `make kind-up` deployed it into a kind cluster (hack/kind-up.sh), driven
with kubectl and the official client against that cluster's API server. The cluster is the
prerequisite: without it every test fails (run `make kind-up` first; `make test-kind` does)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import wait_until

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("TUXIO_CACHE", Path.home() / ".cache" / "tuxio")) / "kind"
CLUSTER = os.environ.get("KIND_CLUSTER", "tuxio")
SYSTEM_NS = "tuxio-system"
# Deadlines far above what a slow machine needs; the tests wait on conditions, never sleep.
TIMEOUT = float(os.environ.get("TUXIO_KIND_TEST_TIMEOUT", "300"))


def _kubectl_binary() -> str:
    """The kubectl hack/kind-up.sh used (the cluster's version), from the cache of
    hack/build-kind-binaries.sh."""
    if "KIND_BIN_DIR" in os.environ:  # as hack/kind-up.sh takes it
        return str(Path(os.environ["KIND_BIN_DIR"]) / "kubectl")
    found = sorted(CACHE.glob("bin-k8s-*/kubectl"))
    if not found:
        raise AssertionError(f"no kubectl under {CACHE}: run `make kind-up` first")
    return str(found[-1])


@dataclass
class Kind:
    kubeconfig: Path
    kubectl_bin: str
    node: str

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [self.kubectl_bin, "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=TIMEOUT + 60,  # above kubectl's own --timeout=TIMEOUT, which then speaks
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}{result.stdout}")
        return result.stdout

    def get(self, *args: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json"))
        return data

    def agent(self, *argv: str) -> str:
        """Run argv in the agent's container on the node (kubectl exec)."""
        return self.kubectl(
            "-n", SYSTEM_NS, "exec", "daemonset/tuxio-agent", "-c", "agent", "--", *argv
        )


@pytest.fixture(scope="session")
def kind() -> Kind:
    kubeconfig = Path(os.environ.get("KIND_KUBECONFIG", CACHE / f"kubeconfig-{CLUSTER}"))
    assert kubeconfig.is_file(), f"no kubeconfig {kubeconfig}: run `make kind-up` first"
    probe = Kind(kubeconfig, _kubectl_binary(), "")
    nodes = probe.get("nodes")["items"]
    assert len(nodes) == 1, [n["metadata"]["name"] for n in nodes]
    return Kind(kubeconfig, probe.kubectl_bin, nodes[0]["metadata"]["name"])


@pytest.fixture
def namespace(kind: Kind) -> Iterator[str]:
    """A namespace of this test; deleted afterwards, once its Sandboxes are gone (their
    finalizer is the operator's: the containers are destroyed first)."""
    name = f"kind-test-{uuid.uuid4().hex[:8]}"
    kind.kubectl("create", "namespace", name)
    yield name
    kind.kubectl(
        "delete", "sandboxes", "--all", "-n", name, "--wait=true", f"--timeout={TIMEOUT:.0f}s"
    )
    kind.kubectl("delete", "namespace", name, "--wait=true", f"--timeout={TIMEOUT:.0f}s")


def ready(
    kind: Kind, kind_and_name: str, namespace: str | None = None, condition: str = "Ready"
) -> None:
    ns = ["-n", namespace] if namespace else []
    kind.kubectl(
        "wait", *ns, f"--for=condition={condition}", kind_and_name, f"--timeout={TIMEOUT:.0f}s"
    )


def containers(kind: Kind) -> list[str]:
    """The LXC containers on the node, as LXC lists them in the agent's container."""
    return kind.agent("lxc-ls", "-P", "/var/lib/tuxio/containers", "-1").split()


def gone(kind: Kind, name: str) -> bool:
    return bool(wait_until(lambda: name not in containers(kind), timeout=TIMEOUT, interval=1.0))
