"""Helpers shared by the test tiers: a real tuxio-agent process, and readers of the kernel.

The agent runs from its console script as it would on a host, with its own data directory
(templates and the LXC path), a fresh token and a free port. Tests read the cgroup files and
/proc themselves rather than trusting the agent's answers.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiohttp import web

from tests.leaks import SessionThings

AGENT = str(Path(sys.executable).with_name("tuxio-agent"))
TEST_ROOT = Path("/var/tmp/tuxio-tests")
# This session's own names (network namespaces, links, addresses), so that sessions running
# side by side never take each other's.
TAG = uuid.uuid4().hex[:4]
# What this session made; at its end nothing of it may be left (tests/conftest.py).
MADE = SessionThings()


# Every process a test starts, so that the session can stop what a failed test left running.
STARTED: list[subprocess.Popen[bytes]] = []


def stop_leftovers() -> None:
    for proc in STARTED:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    STARTED.clear()


@contextlib.asynccontextmanager
async def loopback_server(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A real HTTP server on a free loopback port answering every request with `handle`;
    yields its base URL (for clients whose exact requests a test checks)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def _ephemeral_ports() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def free_port() -> int:
    """A port free now, for a server a test starts, chosen below the kernel's ephemeral range:
    a port from that range (what binding port 0 gives) may be taken by any outgoing
    connection on the machine between this choice and the server's own bind, and on a busy
    machine that happens (a webhook's port taken by a connection to the API server)."""
    ephemeral = _ephemeral_ports()
    candidates = [p for p in range(10000, 32768) if p not in ephemeral]
    for _ in range(200):
        port = random.choice(candidates)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port outside the ephemeral range")


# How long a started process (agent, operator, gateway) may take to answer its health probe, and
# a stopped one to exit. A guard against one that never comes up or never goes, not a measure of
# speed: the wait ends as soon as the process answers, and fails at once if it exits.
START_TIMEOUT = max(300.0, float(os.environ.get("TUXIO_START_TIMEOUT", "0")))  # test-slow: 900
STOP_TIMEOUT = 120.0


def wait_until(
    predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05
) -> object:
    """Poll until `predicate` returns something truthy; fail with the last value otherwise."""
    deadline = time.monotonic() + timeout
    value: object = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


@dataclass
class Agent:
    """One agent process and what it needs."""

    data_dir: Path
    port: int
    token: str
    extra: list[str] = field(default_factory=list)
    scheme: str = "http"
    verify: bool | ssl.SSLContext = True
    proc: subprocess.Popen[bytes] | None = None
    address: str = "127.0.0.1"
    # Argv the agent runs under, e.g. nsenter into a network namespace of its own.
    wrapper: list[str] = field(default_factory=list)
    # Extra environment, e.g. TUXIO_AGENT_* settings without a flag.
    env: dict[str, str] = field(default_factory=dict)
    # The /metrics listener's port: a free one, as many agents run at once.
    metrics_port: int = field(default_factory=lambda: free_port())

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.address}:{self.port}"

    @property
    def lxcpath(self) -> Path:
        return self.data_dir / "containers"

    @property
    def log(self) -> Path:
        return self.data_dir / "agent.log"

    def start(self) -> None:
        command = [
            *self.wrapper,
            AGENT,
            "--data-dir",
            str(self.data_dir),
            "serve",
            "--listen",
            self.address,
            "--port",
            str(self.port),
            "--token-file",
            str(self.data_dir / "token"),
            *self.extra,
        ]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={
                    **os.environ,
                    "TUXIO_AGENT_METRICS_PORT": str(self.metrics_port),
                    **self.env,
                },
            )
        STARTED.append(self.proc)
        MADE.pids.append(self.proc.pid)
        try:
            wait_until(self._healthy, timeout=START_TIMEOUT)
        except BaseException:
            self.stop(signal.SIGKILL)
            raise

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited ({self.proc.returncode}):\n{self.log.read_text()}")
        try:
            return (
                httpx.get(f"{self.url}/healthz", verify=self.verify, timeout=1).status_code == 200
            )
        except httpx.HTTPError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=STOP_TIMEOUT)
        self.proc = None

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token if token is not None else self.token}"},
            verify=self.verify,
            timeout=60,
        )

    def async_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.token}"},
            verify=self.verify,
            timeout=60,
        )


def prepare_data_dir(name: str) -> Path:
    data_dir = TEST_ROOT / f"{name}-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir(parents=True)
    MADE.roots.append(data_dir)
    run = [AGENT, "--data-dir", str(data_dir)]
    subprocess.run([*run, "template", "build", "busybox"], check=True, capture_output=True)
    subprocess.run(
        [*run, "token", "generate", "--out", str(data_dir / "token")],
        check=True,
        capture_output=True,
    )
    return data_dir


def destroy_everything(agent: Agent) -> None:
    """Remove whatever containers a test run left, with LXC's own tools, run as the agent ran
    (in its network namespace: a container's command socket is an abstract socket of the
    namespace its monitor runs in, so lxc-destroy from another one finds it not running)."""
    if agent.log.exists():  # kept for a look after a failed run
        worker = os.environ.get("PYTEST_XDIST_WORKER")  # each worker's own, under xdist
        kind = agent.data_dir.name.split("-")[0] + (f"-{worker}" if worker else "")
        shutil.copy(agent.log, TEST_ROOT / f"last-{kind}-agent.log")
    if agent.lxcpath.is_dir():
        for entry in agent.lxcpath.iterdir():
            # A disk image left mounted as the writable layer (lxc-destroy stops at it).
            subprocess.run(
                ["umount", "-l", str(entry / "overlay")], capture_output=True, check=False
            )
            subprocess.run(
                [*agent.wrapper, "lxc-destroy", "-P", str(agent.lxcpath), "-n", entry.name, "-f"],
                capture_output=True,
                check=False,
            )
    shutil.rmtree(agent.data_dir, ignore_errors=True)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass(frozen=True)
class Netns:
    """A network namespace with a veth pair to the host, named and addressed for this
    session: the host end has `host_address`, the namespace end `address` (a /30)."""

    name: str
    veth: str
    host_address: str
    address: str

    @property
    def wrapper(self) -> list[str]:
        # nsenter, not `ip netns exec`: that one remounts /sys, and with it the cgroup
        # hierarchies LXC needs; only the network namespace is to change.
        return ["nsenter", f"--net=/run/netns/{self.name}", "--"]

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)


def make_netns(index: int, name: str) -> Netns:
    """Network namespace number `index` (1..63) of this session, registered for the leak
    check; its /30 comes from this session's tag, so side-by-side sessions do not clash."""
    number = int(TAG, 16)
    prefix = f"10.{200 + number % 50}.{number // 50 % 256}"
    netns = Netns(
        name=f"tuxio-{TAG}-{name}",
        veth=f"tx{TAG}{index}h",
        host_address=f"{prefix}.{4 * index + 1}",
        address=f"{prefix}.{4 * index + 2}",
    )
    MADE.netns.append(netns.name)
    MADE.links.append(netns.veth)
    peer = f"tx{TAG}{index}n"
    _ip("netns", "add", netns.name)
    _ip("link", "add", netns.veth, "type", "veth", "peer", "name", peer)
    _ip("link", "set", peer, "netns", netns.name)
    _ip("addr", "add", f"{netns.host_address}/30", "dev", netns.veth)
    _ip("link", "set", netns.veth, "up")
    _ip("-n", netns.name, "addr", "add", f"{netns.address}/30", "dev", peer)
    _ip("-n", netns.name, "link", "set", peer, "up")
    _ip("-n", netns.name, "link", "set", "lo", "up")
    return netns


def make_agent(name: str, extra: list[str], env: dict[str, str] | None = None) -> Agent:
    data_dir = prepare_data_dir(name)
    token = (data_dir / "token").read_text().strip()
    return Agent(data_dir, free_port(), token, extra, env=env or {})


# ----- independent readers of what the kernel says ---------------------------------------


def cgroup_dir(pid: int, controller: str) -> Path:
    """The cgroup directory of `pid` for `controller`, from /proc, for v1 and v2 hosts."""
    unified = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if unified and hierarchy == "0":
            return Path("/sys/fs/cgroup") / path.lstrip("/")
        if not unified and controller in controllers.split(","):
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    raise AssertionError(f"no {controller} cgroup for pid {pid}")


def cgroup_value(pid: int, key: str) -> str:
    return (cgroup_dir(pid, key.split(".", 1)[0]) / key).read_text().strip()


def host_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


def rlimit(pid: int, label: str) -> tuple[str, str]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith(label):
            soft, hard = line[len(label) :].split()[:2]
            return soft, hard
    raise AssertionError(f"no {label} in limits")


def is_v2() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


def memory_limit_key() -> str:
    return "memory.max" if is_v2() else "memory.limit_in_bytes"


def processes_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive


def cgroup_processes(pid: int, controller: str = "pids") -> list[int]:
    """Every process in the cgroup of `pid` and the cgroups below it (cgroup.procs)."""
    root = cgroup_dir(pid, controller)
    found: list[int] = []
    # os.walk, not rglob: a session's cgroup the agent removes while the tree is walked is
    # skipped, where rglob raised FileNotFoundError (seen under make test-slow).
    for directory, _, files in os.walk(root):
        if "cgroup.procs" in files:
            with contextlib.suppress(OSError):
                found += [int(p) for p in Path(directory, "cgroup.procs").read_text().split()]
    return found


def pids_refused(pid: int) -> int:
    """How many forks the pids limit of `pid`'s container refused. Where the kernel writes the
    event depends on it: v1 and older v2 kernels count it in the forking process's own cgroup
    (a command's session cgroup, below the container's), so the subtree is summed; kernels
    with `pids.events.local` (v2, Linux 6.12) count the container's already, hierarchically."""
    root = cgroup_dir(pid, "pids")
    files = (
        [root / "pids.events"]
        if (root / "pids.events.local").exists()
        else root.rglob("pids.events")
    )
    refused = 0
    for events in files:
        with contextlib.suppress(OSError):
            fields = events.read_text().split()
            refused += int(fields[fields.index("max") + 1])
    return refused


def process_stat(pid: int) -> tuple[str, str, int, int] | None:
    """Command name, state, parent and session of a process, from /proc; None when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.index("(") + 1 : text.rindex(")")]
    fields = text.rsplit(")", 1)[1].split()
    return name, fields[0], int(fields[1]), int(fields[3])


def zombies_of(parent: int) -> list[int]:
    """Children of `parent` that exited and were not reaped."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = process_stat(int(entry.name))
            if stat is not None and stat[1] == "Z" and stat[2] == parent:
                found.append(int(entry.name))
    return found


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS line")


def pss_bytes(pid: int) -> int:
    """Proportional set size: the process's share of the memory it maps."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no Pss line")


def bytes_written(pid: int) -> int:
    """What a process has written so far (wchar of /proc/<pid>/io)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise AssertionError("no wchar line")


def commands_in(init: int) -> dict[int, str]:
    """The processes of the container whose init is `init`, by host PID: their command names
    (from /proc, for the container's cgroup and those below it)."""
    found = {}
    for pid in cgroup_processes(init):
        stat = process_stat(pid)
        if stat is not None and stat[1] not in ("Z", "X"):
            found[pid] = stat[0]
    return found


def pids_named(init: int, command: str) -> list[int]:
    return [pid for pid, name in commands_in(init).items() if name == command]


def lxc_attach_children(agent: Agent) -> list[int]:
    """The agent's lxc-attach children: one per session (the agent starts them from a sealed
    copy of the binary, so neither the command name nor argv[0] need say lxc-attach)."""
    assert agent.proc is not None
    children = Path(f"/proc/{agent.proc.pid}/task/{agent.proc.pid}/children").read_text()
    found = []
    for pid in children.split():
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--clear-env" in argv:
            found.append(int(pid))
    return found
