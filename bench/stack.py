"""The whole stack on this machine for the benchmarks: control plane, agent, operator, host."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import kubernetes

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GROUP, VERSION = "tux.io", "v1alpha1"


def speed_probe() -> float:
    """The CPU milliseconds a fixed Python loop takes (median of 5): these machines are shared,
    and the same code runs up to twice as slow from one hour to the next. Recorded with every
    benchmark so that runs can be compared."""
    import statistics

    samples = []
    for _ in range(5):
        started = time.process_time()
        total = 0
        for i in range(1_000_000):
            total += i
        samples.append((time.process_time() - started) * 1000)
    return round(statistics.median(samples), 1)


def wait_http(url: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not answer")


def free_port() -> int:
    """A free loopback port: other engineers' benchmarks may run on this machine at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CLUSTER_DIR = Path(os.environ.get("TUXIO_CLUSTER_DIR", "/var/tmp/tuxio-cluster"))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (from /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def control_plane_pid(name: str) -> int:
    return int((CLUSTER_DIR / "run" / f"{name}.pid").read_text().strip())


class Stack:
    """Start with `with Stack(...) as stack:`; everything is stopped and removed on exit.

    With `measure_floor`, the floor is measured before the operator starts (same API server,
    same run, no operator): bare creates of Sandboxes plus one status patch each, at
    parallelism 1 and 20 (`self.floor`)."""

    def __init__(
        self,
        agent_port: int | None = None,
        operator_port: int | None = None,
        operator_env: dict[str, str] | None = None,
        measure_floor: bool = False,
        host_endpoint: str | None = None,
        agent_env: dict[str, str] | None = None,
    ) -> None:
        self.agent_port = agent_port or free_port()
        self.operator_port = operator_port or free_port()
        self.webhook_port = free_port()
        self.operator_env = operator_env or {}
        self.measure_floor = measure_floor
        self.host_endpoint = host_endpoint
        self.agent_env = agent_env or {}
        self.floor: dict[str, Any] = {}
        self.data_dir = Path(tempfile.mkdtemp(prefix="tuxio-bench-", dir="/var/tmp"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.kubeconfig = CLUSTER_DIR / "kubeconfig"
        self.kubectl_bin = ""

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    def __enter__(self) -> Stack:
        try:
            return self._start()
        except BaseException:
            self.__exit__()  # what was started is stopped, even when the start failed
            raise

    def _start(self) -> Stack:
        subprocess.run([str(ROOT / "hack" / "cluster-up.sh")], check=True, capture_output=True)
        bin_dir = (
            subprocess.run(
                [str(ROOT / "hack" / "build-control-plane.sh")],
                check=True,
                capture_output=True,
                text=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        self.kubectl_bin = str(Path(bin_dir) / "kubectl")
        self.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        self.kubectl("wait", "--for=condition=Established", "-f", str(ROOT / "crds"))
        agent = str(BIN / "tuxio-agent")
        subprocess.run(
            [agent, "--data-dir", str(self.data_dir), "template", "build", "busybox"],
            check=True,
            capture_output=True,
        )
        token_file = self.data_dir / "token"
        subprocess.run(
            [agent, "token", "generate", "--out", str(token_file)], check=True, capture_output=True
        )
        self.token = token_file.read_text().strip()
        self._spawn(
            "agent",
            [
                agent,
                "--data-dir",
                str(self.data_dir),
                "serve",
                "--port",
                str(self.agent_port),
                "--token-file",
                str(token_file),
            ],
            {"TUXIO_AGENT_METRICS_PORT": str(free_port()), **self.agent_env},
        )
        wait_http(f"http://127.0.0.1:{self.agent_port}/healthz")
        manifests = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tuxio-system"}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "bench-agent", "namespace": "tuxio-system"},
                "data": {"token": base64.b64encode(self.token.encode()).decode()},
            },
            {
                "apiVersion": f"{GROUP}/{VERSION}",
                "kind": "SandboxHost",
                "metadata": {"name": "bench"},
                "spec": {
                    "endpoint": self.host_endpoint or f"http://127.0.0.1:{self.agent_port}",
                    "credentialsSecretRef": {"name": "bench-agent", "namespace": "tuxio-system"},
                },
            },
        ]
        self.kubectl("apply", "-f", "-", stdin="\n".join(json.dumps(m) for m in manifests))
        if self.measure_floor:
            self.floor = self._floor()
        webhook_port = self.webhook_port
        env = {
            "KUBECONFIG": str(self.kubeconfig),
            # Claims at admission: the API server calls the operator's webhook on loopback.
            "TUXIO_OPERATOR_WEBHOOK_URL": f"https://127.0.0.1:{webhook_port}",
            "TUXIO_OPERATOR_WEBHOOK_LISTEN": "127.0.0.1",
            # Its agents serve plain http on the loopback.
            "TUXIO_OPERATOR_ALLOW_PLAINTEXT_LOOPBACK_AGENTS": "true",
            "TUXIO_OPERATOR_WEBHOOK_PORT": str(webhook_port),
            "TUXIO_OPERATOR_METRICS_PORT": str(free_port()),
            **self.operator_env,
        }
        self._spawn(
            "operator",
            [
                str(BIN / "tuxio-operator"),
                "--liveness",
                f"http://127.0.0.1:{self.operator_port}/healthz",
            ],
            env,
        )
        wait_http(f"http://127.0.0.1:{self.operator_port}/healthz")
        self.kubectl("wait", "--for=condition=Ready", "sandboxhost/bench", "--timeout=60s")
        configuration = kubernetes.client.Configuration()
        kubernetes.config.load_kube_config(
            config_file=str(self.kubeconfig), client_configuration=configuration
        )
        configuration.connection_pool_maxsize = 64
        self.api = kubernetes.client.ApiClient(configuration)
        self.custom = kubernetes.client.CustomObjectsApi(self.api)
        return self

    def _floor(self) -> dict[str, Any]:
        """Bare creates plus one status patch each, no operator: what a claim cannot beat."""
        from client import floor_round

        self.kubectl("create", "namespace", "bench-floor")
        try:
            asyncio.run(floor_round(self.kubeconfig, "bench-floor", 5, 1))  # warm-up
            rounds = {}
            for count, parallel in ((50, 1), (100, 20)):
                before = self.cpu()
                result = asyncio.run(floor_round(self.kubeconfig, "bench-floor", count, parallel))
                result["cpuMsPerOp"] = self.cpu_ms_per(before, count)
                rounds[f"parallelism{parallel}"] = result
            return rounds
        finally:
            self.kubectl("delete", "namespace", "bench-floor", "--wait=false")

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by each process of the stack that is running."""
        pids = {
            "etcd": control_plane_pid("etcd"),
            "apiserver": control_plane_pid("kube-apiserver"),
        }
        for name, proc in zip(("agent", "operator"), self.procs, strict=False):
            pids[name] = proc.pid
        return {name: cpu_seconds(pid) for name, pid in pids.items()}

    def cpu_ms_per(self, before: dict[str, float], count: int) -> dict[str, float]:
        """CPU milliseconds per operation since `before`, per process and in all."""
        after = self.cpu()
        spent = {k: (after[k] - before[k]) * 1000 / count for k in before}
        spent["total"] = sum(spent.values())
        return {k: round(v, 2) for k, v in spent.items()}

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.data_dir / f"{name}.log").open("wb")
        self.procs.append(
            subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env})
        )

    @property
    def operator_log(self) -> Path:
        return self.data_dir / "operator.log"

    def agent_pid(self) -> int:
        return self.procs[0].pid

    def __exit__(self, *exc: Any) -> None:
        subprocess.run(
            [
                self.kubectl_bin,
                f"--kubeconfig={self.kubeconfig}",
                "delete",
                "sandboxhost",
                "bench",
                "--ignore-not-found",
                "--timeout=30s",
            ],
            capture_output=True,
            check=False,
        )
        for proc in reversed(self.procs):
            proc.terminate()
            proc.wait(timeout=60)
        lxcpath = self.data_dir / "containers"
        if lxcpath.is_dir():
            for entry in lxcpath.iterdir():
                subprocess.run(
                    ["lxc-destroy", "-P", str(lxcpath), "-n", entry.name, "-f"],
                    capture_output=True,
                    check=False,
                )
        keep = os.environ.get("TUXIO_BENCH_KEEP_LOGS")
        if keep:
            shutil.copytree(
                self.data_dir,
                keep,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("containers", "templates"),
            )
        shutil.rmtree(self.data_dir, ignore_errors=True)
