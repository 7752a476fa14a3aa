#!/usr/bin/env python3
"""Into the sandbox, measured: terminals and streams through the gateway, on this machine with
everything on it (control plane, operator, agent, gateway, containers and this client).

The stack of bench/stack.py plus the gateway as the aggregated API (hack/localgateway.py).
Kubernetes identities come through the API server (the SDK, `tuxio.client`); browsers come to
the gateway's visitor endpoint with a visitor token (a WebSocket of our own here, as a page's
would be). Figures, each with its target:

- open -> first prompt byte on a Ready sandbox (through the API server, and at the visitor
  endpoint): from the WebSocket's opening to the first byte of the login shell's output;
- claim from a pool -> Ready -> first prompt byte (the SDK's create(pool=...), then a terminal);
- keystroke echo round trip, one key sent and its echo read, with N idle terminals open;
- streaming exec, open -> first byte of stdout (`echo`);
- throughput through a terminal (`yes` of long lines, to an end marker);
- host memory per idle terminal: the agent's and the gateway's RSS growth plus each
  lxc-attach's PSS, with the idle terminals attached;
- M idle terminals open at once on the one host (every prompt seen).

    .venv/bin/python bench/terminal_bench.py --out bench/results/terminal.json
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import ssl
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hack"))

from agent_bench import percentiles
from localgateway import LocalGateway
from stack import Stack, speed_probe
from websockets.asyncio.client import ClientConnection, connect

from tests.support import pss_bytes, rss_bytes
from tuxio.client import AsyncClient, AsyncSandbox, AsyncTerminal, SandboxTimeout
from tuxio.common import remotecommand as rc

NAMESPACE = "bench-terminal"
ORIGIN = "https://bench.tuxio.local"
VISITOR_NAME = "tuxio-gateway.tuxio-system.svc"
PER_CONTAINER = 48  # of the agent's cap of 63 sessions per container (its 64 ptys)
POOL = "bench-warm"
RESOURCES = {"cpus": 1, "memory": "64Mi", "pids": 128}
TARGETS = {
    "openToPromptP50Ms": 30,
    "claimToPromptP50Ms": 60,
    "echoP50Ms": 2,
    "echoP99Ms": 10,
    "execFirstByteP50Ms": 20,
    "throughputMBps": 50,
    "hostKiBPerIdleTerminal": 2048,
    "idleTerminalsAtOnce": 500,
}


def bearer(token: str) -> str:
    encoded = base64.urlsafe_b64encode(token.encode()).decode().rstrip("=")
    return f"base64url.bearer.authorization.k8s.io.{encoded}"


class Visitors:
    """WebSockets to the gateway's visitor endpoint, as a page with a visitor token opens them."""

    def __init__(self, gateway: LocalGateway) -> None:
        self.port = gateway.visitor_port
        self.context = ssl.create_default_context(cadata=gateway.ca)

    async def open(
        self, sandbox: AsyncSandbox, token: str, sub: str, query: list[tuple[str, str]]
    ) -> ClientConnection:
        url = (
            f"wss://127.0.0.1:{self.port}/v1/namespaces/{sandbox.namespace}/sandboxes/"
            f"{sandbox.name}/{sub}?{urlencode(query)}"
        )
        return await connect(
            url,
            subprotocols=[rc.V5, bearer(token)],  # type: ignore[list-item]
            origin=ORIGIN,  # type: ignore[arg-type]
            ssl=self.context,
            server_hostname=VISITOR_NAME,
            compression=None,
            max_size=None,
            open_timeout=120,
            proxy=None,
        )


async def first_output(ws: ClientConnection, timeout: float = 60) -> bytes:
    """The first non-empty stdout frame."""
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.recv()
            assert isinstance(message, bytes)
            if message[:1] == b"\x01" and len(message) > 1:
                return message[1:]


async def read_until(ws: ClientConnection, needle: bytes, timeout: float = 120) -> int:
    """Bytes of stdout read until `needle` shows."""
    seen = bytearray()
    total = 0
    async with asyncio.timeout(timeout):
        while True:
            message = await ws.recv()
            assert isinstance(message, bytes)
            if message[:1] == b"\x01":
                total += len(message) - 1
                seen += message[1:]
                if needle in seen:
                    return total
                del seen[: max(0, len(seen) - len(needle))]


def ms(seconds: float) -> float:
    return seconds * 1000


async def open_to_prompt(
    sandbox: AsyncSandbox, visitors: Visitors, token: str, rounds: int
) -> dict[str, Any]:
    """A new terminal each round: opening to the first byte of the prompt, then ended."""
    through_api, at_visitor = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        terminal = await sandbox.terminal()
        await terminal.recv(timeout=60)
        through_api.append(ms(time.perf_counter() - started))
        await terminal.kill()
        session = uuid.uuid4().hex
        started = time.perf_counter()
        ws = await visitors.open(sandbox, token, "terminal", [("session", session)])
        await first_output(ws)
        at_visitor.append(ms(time.perf_counter() - started))
        await ws.close()
        await sandbox.end_session(session)
    return {
        "throughApiServer": percentiles(through_api),
        "atVisitorEndpoint": percentiles(at_visitor),
    }


async def wait_pool_full(tux: AsyncClient, replicas: int, timeout: float = 300) -> None:
    transport = await tux._ready_transport()
    path = f"/apis/tux.io/v1alpha1/namespaces/{NAMESPACE}/sandboxpools/{POOL}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = (await transport.json("GET", path)).get("status") or {}
        if status.get("readyReplicas") == replicas:
            return
        await asyncio.sleep(0.2)
    raise SystemExit(f"pool {POOL} did not fill to {replicas}")


async def claim_to_prompt(tux: AsyncClient, stack: Stack, rounds: int) -> dict[str, Any]:
    """A claim from a full warm pool, Ready, a terminal, its first prompt byte; deleted after."""
    replicas = max(2, min(rounds, 10))
    pool = {
        "apiVersion": "tux.io/v1alpha1",
        "kind": "SandboxPool",
        "metadata": {"name": POOL, "namespace": NAMESPACE},
        "spec": {"template": "busybox", "replicas": replicas, "resources": RESOURCES},
    }
    stack.kubectl("apply", "-f", "-", stdin=json.dumps(pool))
    total, ready = [], []
    for _ in range(rounds):
        await wait_pool_full(tux, replicas)
        started = time.perf_counter()
        sandbox = await tux.create(pool=POOL, generate_name="claim-", timeout=60)
        ready.append(ms(time.perf_counter() - started))
        terminal = await sandbox.terminal()
        await terminal.recv(timeout=60)
        total.append(ms(time.perf_counter() - started))
        await terminal.kill()
        await sandbox.delete()
    stack.kubectl("delete", "sandboxpool", POOL, "-n", NAMESPACE, "--wait=false")
    return {"claimToPrompt": percentiles(total), "claimToReady": percentiles(ready)}


async def echo_round_trips(ws: ClientConnection, keys: int) -> dict[str, Any]:
    """One key at a time, its echo awaited: the shell's line editor echoes every key."""
    samples = []
    for index in range(keys):
        if index % 60 == 59:  # a line that stays short: erase it (Ctrl-U), its echo read
            await ws.send(rc.data_frame(rc.STDIN, b"\x15"))
            await asyncio.sleep(0.05)
            await drain(ws)
        started = time.perf_counter()
        await ws.send(rc.data_frame(rc.STDIN, b"x"))
        await read_until(ws, b"x", timeout=30)
        samples.append(ms(time.perf_counter() - started))
    await ws.send(rc.data_frame(rc.STDIN, b"\x15"))
    return percentiles(samples)


async def drain(ws: ClientConnection) -> None:
    """Read what is already there, without waiting for more."""
    while True:
        try:
            async with asyncio.timeout(0.05):
                await ws.recv()
        except TimeoutError:
            return


async def exec_first_byte(
    sandbox: AsyncSandbox, visitors: Visitors, token: str, rounds: int
) -> dict[str, Any]:
    through_api, at_visitor = [], []
    query = rc.encode_exec_query(rc.ExecOptions(command=("echo", "x")))
    for _ in range(rounds):
        started = time.perf_counter()
        stream = sandbox.exec_stream(["echo", "x"])
        async for _channel, _data in stream:
            through_api.append(ms(time.perf_counter() - started))
            break
        await stream.close()
        started = time.perf_counter()
        ws = await visitors.open(sandbox, token, "exec", query)
        await first_output(ws)
        at_visitor.append(ms(time.perf_counter() - started))
        await ws.close()
    return {
        "throughApiServer": percentiles(through_api),
        "atVisitorEndpoint": percentiles(at_visitor),
    }


async def throughput(terminal: AsyncTerminal, megabytes: int) -> dict[str, Any]:
    """`yes` of 1000-byte lines through the terminal, to an end marker the shell computes (so
    the echo of the command line does not end the reading). The line is made in the sandbox:
    a typed line of that length would pass the line editor's limit (1024 in busybox)."""
    count = megabytes * 1024 * 1024 // 1000
    line = "$(head -c 999 /dev/zero | tr '\\0' a)"
    await terminal.send(f'yes "{line}" | head -n {count}; echo END-$((40+2))\r')
    started = time.perf_counter()
    received = 0
    seen = bytearray()
    while b"END-42" not in seen:
        try:
            data = await terminal.recv(timeout=120)
        except SandboxTimeout:
            raise SystemExit(
                f"throughput: stalled after {received} bytes: {bytes(seen)!r}"
            ) from None
        if not data:
            raise SystemExit("the terminal ended during the throughput round")
        received += len(data)
        seen = (seen + data)[-300:]
    seconds = time.perf_counter() - started
    return {
        "bytes": received,
        "seconds": round(seconds, 3),
        "MBps": round(received / seconds / 1e6, 1),
    }


def attach_processes(agent_pid: int) -> list[int]:
    children = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text()
    return [int(pid) for pid in children.split()]


async def open_idle(
    visitors: Visitors, sandboxes: list[tuple[AsyncSandbox, str]], count: int, start: int
) -> list[ClientConnection]:
    """`count` terminals at the visitor endpoint, each until its prompt, spread over the
    sandboxes at PER_CONTAINER each."""
    opened = []
    for index in range(start, start + count):
        sandbox, token = sandboxes[index // PER_CONTAINER]
        ws = await visitors.open(sandbox, token, "terminal", [("session", uuid.uuid4().hex)])
        await read_until(ws, b"# ", timeout=300)
        opened.append(ws)
    return opened


def memory(stack: Stack, gateway: LocalGateway) -> dict[str, int]:
    attach = attach_processes(stack.agent_pid())
    return {
        "agent": rss_bytes(stack.agent_pid()),
        "gateway": rss_bytes(gateway.pid()),
        "attachPss": sum(pss_bytes(pid) for pid in attach),
        "attachProcesses": len(attach),
    }


def per_terminal_kib(
    before: dict[str, int], after: dict[str, int], terminals: int
) -> dict[str, float]:
    grown = {
        k: (after[k] - before[k]) / terminals / 1024 for k in ("agent", "gateway", "attachPss")
    }
    grown["total"] = sum(grown.values())
    return {k: round(v, 1) for k, v in grown.items()}


def figure(
    value: float | int, unit: str, target: float | int, higher_is_better: bool = False
) -> dict[str, Any]:
    met = value >= target if higher_is_better else value <= target
    return {"value": value, "unit": unit, "target": target, "met": met}


async def measure(stack: Stack, gateway: LocalGateway, args: argparse.Namespace) -> dict[str, Any]:
    # A namespace left by a run that failed goes first (with its Sandboxes), then a fresh one.
    stack.kubectl("delete", "namespace", NAMESPACE, "--ignore-not-found", "--timeout=180s")
    stack.kubectl("create", "namespace", NAMESPACE)
    try:
        return await _measure(stack, gateway, args)
    finally:
        stack.kubectl("delete", "sandboxes", "--all", "-n", NAMESPACE, "--timeout=180s")
        stack.kubectl("delete", "namespace", NAMESPACE, "--wait=false")


async def _measure(stack: Stack, gateway: LocalGateway, args: argparse.Namespace) -> dict[str, Any]:
    visitors = Visitors(gateway)
    results: dict[str, Any] = {}
    async with AsyncClient(kubeconfig=str(stack.kubeconfig), namespace=NAMESPACE) as tux:
        main = await tux.create(
            template="busybox", name="term-main", resources=RESOURCES, timeout=120
        )
        token = (await main.token(["terminal", "exec"], 3600)).token
        await open_to_prompt(main, visitors, token, 3)  # warm-up: connections, caches
        results["openToPrompt"] = await open_to_prompt(main, visitors, token, args.rounds)
        results["execFirstByte"] = await exec_first_byte(main, visitors, token, args.rounds)
        async with await main.terminal() as terminal:
            await terminal.read_until(b"# ", timeout=60)
            results["throughput"] = await throughput(terminal, args.megabytes)
            await terminal.kill()
        results["claim"] = await claim_to_prompt(tux, stack, args.claims)

        idle_sandboxes = []
        for index in range((args.idle_max + PER_CONTAINER - 1) // PER_CONTAINER):
            sandbox = await tux.create(
                template="busybox", name=f"idle-{index}", resources=RESOURCES, timeout=120
            )
            idle_sandboxes.append((sandbox, (await sandbox.token(["terminal"], 3600)).token))
        active = await visitors.open(main, token, "terminal", [("session", uuid.uuid4().hex)])
        await read_until(active, b"# ")
        before = memory(stack, gateway)
        started = time.perf_counter()
        idle = await open_idle(visitors, idle_sandboxes, args.idle, 0)
        results["idleOpenSeconds"] = round(time.perf_counter() - started, 2)
        at_idle = memory(stack, gateway)
        results["memoryPerIdleTerminalKiB"] = per_terminal_kib(before, at_idle, args.idle)
        results["echo"] = await echo_round_trips(active, args.keys)
        started = time.perf_counter()
        idle += await open_idle(visitors, idle_sandboxes, args.idle_max - args.idle, args.idle)
        results["idleAtOnce"] = {
            "open": len(idle),
            "secondsForTheRest": round(time.perf_counter() - started, 2),
            "memoryPerTerminalKiB": per_terminal_kib(before, memory(stack, gateway), len(idle)),
        }
        for ws in [active, *idle]:
            await ws.close()
    results["figures"] = figures(results)
    return results


# Each figure: where in the results, its unit, its target, and whether more is better.
FIGURES = [
    (
        "openToPromptP50Ms",
        ("openToPrompt", "throughApiServer", "p50"),
        "ms",
        "openToPromptP50Ms",
        False,
    ),
    (
        "openToPromptAtVisitorP50Ms",
        ("openToPrompt", "atVisitorEndpoint", "p50"),
        "ms",
        "openToPromptP50Ms",
        False,
    ),
    ("claimToPromptP50Ms", ("claim", "claimToPrompt", "p50"), "ms", "claimToPromptP50Ms", False),
    ("echoP50Ms", ("echo", "p50"), "ms", "echoP50Ms", False),
    ("echoP99Ms", ("echo", "p99"), "ms", "echoP99Ms", False),
    (
        "execFirstByteP50Ms",
        ("execFirstByte", "throughApiServer", "p50"),
        "ms",
        "execFirstByteP50Ms",
        False,
    ),
    (
        "execFirstByteAtVisitorP50Ms",
        ("execFirstByte", "atVisitorEndpoint", "p50"),
        "ms",
        "execFirstByteP50Ms",
        False,
    ),
    ("throughputMBps", ("throughput", "MBps"), "MB/s", "throughputMBps", True),
    (
        "hostKiBPerIdleTerminal",
        ("memoryPerIdleTerminalKiB", "total"),
        "KiB",
        "hostKiBPerIdleTerminal",
        False,
    ),
    ("idleTerminalsAtOnce", ("idleAtOnce", "open"), "terminals", "idleTerminalsAtOnce", True),
]


def figures(results: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for name, where, unit, target, more_is_better in FIGURES:
        value: Any = results
        for key in where:
            value = value[key]
        found[name] = figure(value, unit, TARGETS[target], more_is_better)
    return found


def plot(results: dict[str, Any], target: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    latencies = {
        "open→prompt\n(API server)": results["openToPrompt"]["throughApiServer"],
        "open→prompt\n(visitor)": results["openToPrompt"]["atVisitorEndpoint"],
        "claim→prompt": results["claim"]["claimToPrompt"],
        "keystroke echo": results["echo"],
        "exec first byte\n(API server)": results["execFirstByte"]["throughApiServer"],
        "exec first byte\n(visitor)": results["execFirstByte"]["atVisitorEndpoint"],
    }
    keys = ["openToPromptP50Ms", "openToPromptP50Ms", "claimToPromptP50Ms", "echoP50Ms",
            "execFirstByteP50Ms", "execFirstByteP50Ms"]  # fmt: skip
    targets = [TARGETS[k] for k in keys]
    figure, axis = plt.subplots(figsize=(10, 5))
    names = list(latencies)
    positions = range(len(names))
    axis.bar([p - 0.2 for p in positions], [v["p50"] for v in latencies.values()], 0.4, label="p50")
    axis.bar([p + 0.2 for p in positions], [v["p99"] for v in latencies.values()], 0.4, label="p99")
    axis.scatter(
        list(positions), targets, marker="_", s=900, color="black", label="target (p50)", zorder=3
    )
    axis.set_xticks(list(positions), names, fontsize=8)
    axis.set_yscale("log")
    axis.set_ylabel("ms (log scale)")
    idle = results["idleAtOnce"]["open"]
    axis.set_title(
        f"tuxio terminals through the gateway, one 2-core machine ({idle} idle terminals at once, "
        f"{results['throughput']['MBps']} MB/s through one)"
    )
    axis.grid(True, which="both", axis="y", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(target, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/terminal.json"))
    parser.add_argument("--rounds", type=int, default=50, help="samples of open->prompt and exec")
    parser.add_argument("--claims", type=int, default=20, help="claims from the warm pool")
    parser.add_argument("--keys", type=int, default=500, help="keystrokes timed")
    parser.add_argument(
        "--idle", type=int, default=200, help="idle terminals open during the echo round"
    )
    parser.add_argument(
        "--idle-max", type=int, default=500, help="idle terminals open at once in the end"
    )
    parser.add_argument("--megabytes", type=int, default=256, help="through the terminal")
    args = parser.parse_args()
    args.idle_max = max(args.idle_max, args.idle)
    probe_before = speed_probe()
    agent_env = {
        "TUXIO_AGENT_SESSIONS_PER_CONTAINER": str(PER_CONTAINER),
        "TUXIO_AGENT_SESSIONS_PER_AGENT": str(max(2048, args.idle_max + 64)),
    }
    with Stack(agent_env=agent_env) as stack:
        gateway = LocalGateway(
            [stack.kubectl_bin, f"--kubeconfig={stack.kubeconfig}"],
            stack.data_dir,
            {"TUXIO_GATEWAY_VISITOR_ALLOWED_ORIGINS": ORIGIN},
        )
        with gateway:
            results = asyncio.run(measure(stack, gateway, args))
    document = {
        "benchmark": "terminals, exec and claims through the gateway (issue 12)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            "speedProbeMs": {"before": probe_before, "after": speed_probe()},
            "note": "API server, etcd, kube-controller-manager, operator, agent, gateway, "
            "containers and this client share the machine",
        },
        "sizes": {k: v for k, v in vars(args).items() if k != "out"},
        "targets": TARGETS,
        **results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    plot(results, args.out.with_suffix(".png"))
    for name, value in results["figures"].items():
        verdict = "met" if value["met"] else "NOT met"
        shown = f"{value['value']:>10} {value['unit']:9} target {value['target']:>6}"
        print(f"{name:32} {shown}  {verdict}")
    print(f"\nwritten to {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
