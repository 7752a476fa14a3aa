#!/usr/bin/env python3
"""The agent end to end: build the busybox template, start tuxio-agent, create a sandbox
through its API, run `uname -a` in it, show what the host observes, and clean up."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tuxio.nodeagent.models import ContainerSpec, ExecRequest, Limits
from tuxio.operator.agentclient import AgentClient

AGENT = str(Path(sys.executable).with_name("tuxio-agent"))
PORT = 7481


def step(text: str) -> None:
    print(f"\n==> {text}", flush=True)


async def demo(url: str, token: str) -> None:
    async with AgentClient(url, token) as agent:
        host = await agent.host()
        print(
            f"host: cgroup v{host.cgroup_version}, {host.cpus.total} cores "
            f"(reserved {host.cpus.reserved}, shared {host.cpus.shared}), "
            f"templates {[t.name for t in host.templates]}"
        )

        step("PUT /v1/containers/demo: a busybox sandbox with limits")
        spec = ContainerSpec(
            template="busybox",
            limits=Limits(cpus=1, memory=128 * 2**20, pids=64, nofile=1024, nproc=128),
            labels={"tux.io/demo": "true"},
        )
        started = time.perf_counter()
        status = await agent.put("demo", spec)
        elapsed = (time.perf_counter() - started) * 1000
        print(f"state {status.state}, pid {status.pid}, ready in {elapsed:.0f} ms")

        step("exec uname -a inside it")
        result = await agent.exec("demo", ExecRequest(argv=["uname", "-a"]))
        print(result.stdout, end="")
        whoami = await agent.exec("demo", ExecRequest(argv=["id"]))
        print(f"inside: {whoami.stdout.strip()}")
        print(f"outside: init runs as host uid {_host_uid(status.pid or 0)}")

        step("observed state (read back from LXC, the cgroup files and /proc)")
        observed = await agent.get("demo")
        assert observed is not None
        assert observed.limits is not None
        assert observed.usage is not None
        rows = [
            ("state", observed.state),
            ("template", observed.template),
            ("labels", observed.labels),
            ("cpuset", observed.limits.cpuset),
            ("memory limit", f"{observed.limits.memory} bytes"),
            ("memory+swap limit", f"{observed.limits.memory_swap} bytes"),
            ("pids limit", observed.limits.pids),
            ("nofile / nproc", f"{observed.limits.nofile} / {observed.limits.nproc}"),
            ("cpu used", f"{observed.usage.cpu_seconds:.3f} s"),
            ("memory used", f"{observed.usage.memory_bytes} bytes"),
            ("tasks", observed.usage.pids),
            ("started at", observed.started_at),
        ]
        for key, value in rows:
            print(f"  {key:<18} {value}")

        step("DELETE /v1/containers/demo")
        print(f"deleted: {await agent.delete('demo')}")


def _host_uid(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return line.split()[1]
    return "?"


def main() -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="tuxio-demo-", dir="/var/tmp"))
    agent = None
    try:
        step("tuxio-agent template build busybox")
        subprocess.run(
            [AGENT, "--data-dir", str(data_dir), "template", "build", "busybox"], check=True
        )
        token_file = data_dir / "token"
        subprocess.run(
            [AGENT, "token", "generate", "--out", str(token_file)],
            check=True,
            stdout=subprocess.DEVNULL,
        )

        step(f"tuxio-agent serve on 127.0.0.1:{PORT}")
        agent = subprocess.Popen(
            [
                AGENT,
                "--data-dir",
                str(data_dir),
                "serve",
                "--port",
                str(PORT),
                "--token-file",
                str(token_file),
            ],
        )
        url = f"http://127.0.0.1:{PORT}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        else:
            raise SystemExit("the agent did not come up")
        asyncio.run(demo(url, token_file.read_text().strip()))
        step("done")
        return 0
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=30)
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
