#!/usr/bin/env python3
"""tuxio end to end on this machine: a real Kubernetes control plane, the CRDs, the node agent,
the operator and the gateway (registered as the aggregated API subresources.tux.io) as local
processes, a SandboxHost for this machine, and a Sandbox applied with kubectl, waited for,
listed, used through `kubectl tuxio` (a command, then a scripted terminal session) and
deleted."""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pexpect
from localgateway import LocalGateway

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
AGENT_PORT = 7482
OPERATOR_HEALTH = 18080
OPERATOR_WEBHOOK = 18443
NAMESPACE = "demo"


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


def run(*argv: str, stdin: str | None = None, quiet: bool = False) -> str:
    """Run a command, echoing it as a shell would show it."""
    shown = [Path(argv[0]).name, *argv[1:]]
    print(f"$ {shlex.join(shown)}", flush=True)
    result = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(result.stdout + result.stderr, file=sys.stderr)
        raise SystemExit(f"failed: {shlex.join(shown)}")
    if not quiet and result.stdout.strip():
        print(result.stdout.rstrip(), flush=True)
    return result.stdout


def wait_http(url: str, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not come up")


def main() -> int:
    step("a Kubernetes control plane on loopback (hack/cluster-up.sh; the first run builds it)")
    run(str(ROOT / "hack" / "cluster-up.sh"), quiet=True)
    bin_dir = (
        run(str(ROOT / "hack" / "build-control-plane.sh"), quiet=True).strip().splitlines()[-1]
    )
    kubeconfig = Path(os.environ.get("TUXIO_CLUSTER_DIR", "/var/tmp/tuxio-cluster")) / "kubeconfig"
    kubectl = [str(Path(bin_dir) / "kubectl"), f"--kubeconfig={kubeconfig}"]
    run(*kubectl, "version")

    step("the CRDs (generated from operator/models.py)")
    run(*kubectl, "apply", "--server-side", "-f", str(ROOT / "crds"))
    run(*kubectl, "wait", "--for=condition=Established", "-f", str(ROOT / "crds"), quiet=True)

    data_dir = Path(tempfile.mkdtemp(prefix="tuxio-demo-", dir="/var/tmp"))
    agent = operator = None
    gateway: LocalGateway | None = None
    try:
        step("the node agent for this machine, with the busybox template")
        run(str(BIN / "tuxio-agent"), "--data-dir", str(data_dir), "template", "build", "busybox")
        token_file = data_dir / "token"
        run(str(BIN / "tuxio-agent"), "token", "generate", "--out", str(token_file), quiet=True)
        agent = subprocess.Popen(
            [
                str(BIN / "tuxio-agent"),
                "--data-dir",
                str(data_dir),
                "serve",
                "--port",
                str(AGENT_PORT),
                "--token-file",
                str(token_file),
            ],
            stdout=(data_dir / "agent.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        wait_http(f"http://127.0.0.1:{AGENT_PORT}/healthz", "the agent")

        step("a SandboxHost for this machine, its token in a Secret")
        manifests = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "tuxio-system"}},
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "this-machine-agent", "namespace": "tuxio-system"},
                "data": {
                    "token": base64.b64encode(token_file.read_text().strip().encode()).decode()
                },
            },
            {
                "apiVersion": "tux.io/v1alpha1",
                "kind": "SandboxHost",
                "metadata": {"name": "this-machine"},
                "spec": {
                    "endpoint": f"http://127.0.0.1:{AGENT_PORT}",
                    "credentialsSecretRef": {
                        "name": "this-machine-agent",
                        "namespace": "tuxio-system",
                    },
                    "location": {"region": "local"},
                },
            },
        ]
        run(*kubectl, "apply", "-f", "-", stdin="\n".join(json.dumps(m) for m in manifests))

        step("the operator (kopf), watching the whole cluster")
        env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "TUXIO_OPERATOR_PROBE_INTERVAL_SECONDS": "1",
            # Claims at admission: the API server calls the operator's webhook on loopback.
            "TUXIO_OPERATOR_WEBHOOK_URL": f"https://127.0.0.1:{OPERATOR_WEBHOOK}",
            "TUXIO_OPERATOR_WEBHOOK_LISTEN": "127.0.0.1",
            "TUXIO_OPERATOR_WEBHOOK_PORT": str(OPERATOR_WEBHOOK),
        }
        operator = subprocess.Popen(
            [
                str(BIN / "tuxio-operator"),
                "--liveness",
                f"http://127.0.0.1:{OPERATOR_HEALTH}/healthz",
            ],
            stdout=(data_dir / "operator.log").open("wb"),
            stderr=subprocess.STDOUT,
            env=env,
        )
        wait_http(f"http://127.0.0.1:{OPERATOR_HEALTH}/healthz", "the operator")
        run(*kubectl, "wait", "--for=condition=Ready", "sandboxhost/this-machine", "--timeout=60s")
        run(*kubectl, "get", "sbxhost")

        step("a Sandbox, from manifests/samples/sandbox.yaml")
        print((ROOT / "manifests" / "samples" / "sandbox.yaml").read_text().rstrip())
        started = time.monotonic()
        run(
            *kubectl,
            "apply",
            "-n",
            NAMESPACE,
            "-f",
            str(ROOT / "manifests" / "samples" / "sandbox.yaml"),
        )
        run(
            *kubectl,
            "wait",
            "-n",
            NAMESPACE,
            "--for=condition=Ready",
            "sandbox/visitor-42",
            "--timeout=60s",
        )
        print(
            f"(Ready {time.monotonic() - started:.2f} s after kubectl apply, "
            "the start of two kubectl processes included)"
        )
        run(*kubectl, "get", "sbx", "-n", NAMESPACE)
        run(*kubectl, "get", "sbx", "-n", NAMESPACE, "-o", "wide")
        body = json.loads(
            run(*kubectl, "get", "sandbox", "visitor-42", "-n", NAMESPACE, "-o", "json", quiet=True)
        )
        print(json.dumps(body["status"], indent=2))

        step("the gateway, as the aggregated API subresources.tux.io behind the API server")
        gateway = LocalGateway(kubectl, data_dir)
        gateway.start()
        run(*kubectl, "get", "apiservice", "v1alpha1.subresources.tux.io")

        step("a command through the plugin: kubectl tuxio exec (API server -> gateway -> agent)")
        # kubectl finds kubectl-tuxio on PATH (the package's console script) and passes it the
        # rest of the line; flags of kubectl's own may not come before a plugin's name.
        plugin_env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "KUBECONFIG": str(kubeconfig),
        }
        tuxio = [kubectl[0], "tuxio", "-n", NAMESPACE]
        for argv in (
            ["uname", "-a"],
            ["id"],
            [
                "sh",
                "-c",
                "grep -E 'processes|open files' /proc/1/limits; echo to-stderr >&2; exit 3",
            ],
        ):
            shown = ["kubectl", "tuxio", "-n", NAMESPACE, "exec", "visitor-42", "--", *argv]
            print(f"$ {shlex.join(shown)}", flush=True)
            done = subprocess.run([*tuxio, "exec", "visitor-42", "--", *argv], env=plugin_env,
                                  capture_output=True, text=True, check=False)  # fmt: skip
            print(done.stdout.rstrip())
            if done.stderr:
                print(f"(stderr) {done.stderr.rstrip()}")
            print(f"(exit code {done.returncode})")

        step("a scripted terminal session: kubectl tuxio shell visitor-42 (a real pty)")
        print(f"$ kubectl tuxio -n {NAMESPACE} shell visitor-42", flush=True)
        shell = pexpect.spawn(kubectl[0], [*tuxio[1:], "shell", "visitor-42"], env=plugin_env,
                              dimensions=(24, 80), timeout=60, encoding="utf-8",
                              codec_errors="replace")  # fmt: skip
        shell.logfile_read = sys.stdout
        try:
            shell.expect("# ")
            for line in ("tty", "stty size", "echo $((6*7))", "exit 5"):
                shell.send(line + "\r")
                if line != "exit 5":
                    shell.expect("# ")
            shell.expect(pexpect.EOF)
        finally:
            shell.close()
        print(f"\n(the shell's exit code came back: {shell.exitstatus})")

        step("deletion: the operator destroys the container, then lets the Sandbox go")
        run(*kubectl, "delete", "sandbox", "visitor-42", "-n", NAMESPACE, "--timeout=60s")
        run(*kubectl, "get", "sbx", "-n", NAMESPACE)
        run(
            *kubectl,
            "get",
            "events",
            "-n",
            NAMESPACE,
            "--field-selector",
            "involvedObject.name=visitor-42",
            "--sort-by=.lastTimestamp",
        )
        step("done; the control plane stays up for the next run (make cluster-down stops it)")
        return 0
    finally:
        if gateway is not None:
            gateway.stop()
        subprocess.run(
            [*kubectl, "delete", "sandboxhost", "this-machine", "--ignore-not-found"],
            capture_output=True,
            check=False,
        )
        for proc in (operator, agent):
            if proc is not None:
                proc.terminate()
                proc.wait(timeout=60)
        lxcpath = data_dir / "containers"
        if lxcpath.is_dir():
            for entry in lxcpath.iterdir():
                subprocess.run(
                    ["lxc-destroy", "-P", str(lxcpath), "-n", entry.name, "-f"],  # noqa: S607
                    capture_output=True,
                    check=False,
                )
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
