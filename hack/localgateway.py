"""The gateway as a local process behind the API server, for `make demo` and the benchmarks:
the manifests' gateway objects (less the Deployment and its budget: no scheduler here, this
process stands in for the pods), the serving certificate of hack/create-gateway-secrets.sh,
the ServiceAccount's token from the TokenRequest API, and an EndpointSlice that points the
Service tuxio-gateway-api (and so the APIService) at this process on this machine's address
(an endpoint may not be loopback). Plaintext agents are allowed: the local agents of the demo
and the benchmarks listen on loopback without TLS.

    with LocalGateway(kubectl, run_dir) as gateway:   # subresources.tux.io is served
        ...
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NAMESPACE = "tuxio-system"
API_SERVICE = "v1alpha1.subresources.tux.io"
SERVICE = "tuxio-gateway-api"
API_NAME = f"{SERVICE}.{NAMESPACE}.svc"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def host_address() -> str:
    """This machine's first global IPv4 address."""
    out = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        return line.split()[3].split("/")[0]
    raise SystemExit(f"no global IPv4 address on this machine:\n{out}")


class LocalGateway:
    """`tuxio-gateway serve`, registered as the aggregated API of the cluster that `kubectl`
    (an argv: the binary and its --kubeconfig) reaches."""

    def __init__(self, kubectl: list[str], run_dir: Path, env: dict[str, str] | None = None):
        self.kubectl_argv = kubectl
        self.run_dir = run_dir
        self.extra_env = env or {}
        self.address = host_address()
        self.api_port = free_port()
        self.visitor_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [*self.kubectl_argv, *args], input=stdin, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise SystemExit(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    @property
    def log(self) -> Path:
        return self.run_dir / "gateway.log"

    def __enter__(self) -> LocalGateway:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        self.kubectl("apply", "-k", str(ROOT / "manifests" / "base" / "rbac"))
        built = yaml.safe_load_all(self.kubectl("kustomize", str(ROOT / "manifests/base/gateway")))
        kept = [o for o in built if o and o["kind"] not in ("Deployment", "PodDisruptionBudget")]
        self.kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List",
                                                            "items": kept}))  # fmt: skip
        kubectl_dir = str(Path(self.kubectl_argv[0]).parent)
        kubeconfig = next(
            a.split("=", 1)[1] for a in self.kubectl_argv if a.startswith("--kubeconfig=")
        )
        path = f"{kubectl_dir}:{os.environ['PATH']}"
        made = subprocess.run(
            [str(ROOT / "hack" / "create-gateway-secrets.sh")],
            env={**os.environ, "KUBECONFIG": kubeconfig, "PATH": path},
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            raise SystemExit(f"hack/create-gateway-secrets.sh: {made.stderr}")
        tls = self.run_dir / "gateway-tls"
        tls.mkdir(parents=True, exist_ok=True)
        serving = json.loads(
            self.kubectl("get", "secret", "-n", NAMESPACE, "tuxio-gateway-serving", "-o", "json")
        )
        for key in ("tls.crt", "tls.key", "ca.crt"):
            (tls / key).write_bytes(base64.b64decode(serving["data"][key]))
        self.ca = (tls / "ca.crt").read_text()
        token = self.kubectl(
            "create", "token", "tuxio-gateway", "-n", NAMESPACE, "--duration=24h"
        ).strip()
        own = self._token_kubeconfig(Path(kubeconfig), token)
        env = {
            **os.environ,
            "KUBECONFIG": str(own),
            "TUXIO_GATEWAY_API_LISTEN": self.address,
            "TUXIO_GATEWAY_API_PORT": str(self.api_port),
            "TUXIO_GATEWAY_VISITOR_LISTEN": "127.0.0.1",
            "TUXIO_GATEWAY_VISITOR_PORT": str(self.visitor_port),
            "TUXIO_GATEWAY_TLS_CERT_FILE": str(tls / "tls.crt"),
            "TUXIO_GATEWAY_TLS_KEY_FILE": str(tls / "tls.key"),
            "TUXIO_GATEWAY_ALLOW_PLAINTEXT_AGENTS": "true",
            **self.extra_env,
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "tuxio-gateway"), "serve"], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self._wait(self._ready, "the gateway's /readyz")
        self.kubectl("apply", "-f", "-", stdin=json.dumps(self._endpoints()))
        self._wait(self._available, f"the APIService {API_SERVICE} Available")

    def _token_kubeconfig(self, admin_path: Path, token: str) -> Path:
        admin = yaml.safe_load(admin_path.read_text())
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": admin["clusters"],
            "users": [{"name": "gateway", "user": {"token": token}}],
            "contexts": [{"name": "gateway", "context": {"cluster": admin["clusters"][0]["name"],
                                                         "user": "gateway"}}],
            "current-context": "gateway",
        }  # fmt: skip
        path = self.run_dir / "gateway.kubeconfig"
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config))
        return path

    def _endpoints(self) -> dict[str, Any]:
        return {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{SERVICE}-local",
                "namespace": NAMESPACE,
                "labels": {"kubernetes.io/service-name": SERVICE},
            },
            "addressType": "IPv4",
            "ports": [{"name": "api", "port": self.api_port, "protocol": "TCP"}],
            "endpoints": [{"addresses": [self.address], "conditions": {"ready": True}}],
        }

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise SystemExit(f"the gateway exited:\n{self.log.read_text()[-3000:]}")
        context = ssl.create_default_context(cadata=self.ca)
        try:
            with httpx.Client(verify=context, timeout=2) as http:
                answer = http.get(f"https://{self.address}:{self.api_port}/readyz",
                                  extensions={"sni_hostname": API_NAME})  # fmt: skip
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def _available(self) -> bool:
        body = json.loads(self.kubectl("get", "apiservice", API_SERVICE, "-o", "json"))
        return any(
            c["type"] == "Available" and c["status"] == "True"
            for c in (body.get("status") or {}).get("conditions", [])
        )

    @staticmethod
    def _wait(condition: Any, what: str, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise SystemExit(f"{what}: not within {timeout} s")
            time.sleep(0.1)

    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=60)
        self.proc = None
        slice_name = f"{SERVICE}-local"
        for args in (
            ("delete", "apiservice", API_SERVICE, "--ignore-not-found"),
            ("delete", "endpointslice", "-n", NAMESPACE, slice_name, "--ignore-not-found"),
        ):
            subprocess.run([*self.kubectl_argv, *args], capture_output=True, check=False)
