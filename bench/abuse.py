#!/usr/bin/env python3
"""Abuse at once: six sandboxes attack the host together, next to a quiet neighbour.

The attacks: a fork bomb, a memory bomb, all-core spinning, a disk fill, an inode fill and an
output flood through a terminal (read as fast as a client can, in a process of its own). While
they run, measured from outside: the agent's latency for its probe (GET /v1/containers) and
for creating a new sandbox, the neighbour's exec and terminal echo latency, the neighbour's
cpuset (read from its cgroup), the host's free disk, and each attacker's disk image on the
host. The attack lasts until every attack has reached its limit (the pids cap counted a
refusal, the OOM killer struck, the disk and the inodes are full, the flood and the spinning
are well under way) and at least `--seconds`.

    .venv/bin/python bench/abuse.py --seconds 30 --out bench/results/abuse.json

Targets (on a quiet machine): agent p99 < 50 ms, neighbour echo p99 < 20 ms, host disk taken
at most the attackers' quotas. tests/agent/test_abuse.py runs the same attack briefly and
asserts the containment facts, not the latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import remote
from tests.support import Agent, cgroup_dir, destroy_everything, is_v2, make_agent, pids_refused

__all__ = ["ATTACKS", "QUOTA", "AbuseReport", "abuse"]

# Every attacker's disk and inode limits: small, so that the fills are over in seconds.
QUOTA = {"disk": 64 * 2**20, "inodes": 2048}
BOXED = {"cpus": 1, "memory": "64Mi", "pids": 64, "nproc": 4096, **QUOTA}
FLOOD_BYTES = 8 * 2**20
SPIN_SECONDS = 2.0

# name: (limits, the attack's argv, run by exec with a timeout of the attack's length).
ATTACKS: dict[str, list[str]] = {
    # The sleep is forked before the bomb and the shell then only waits: a shell that forked
    # after it would fail at the pids limit and end the command, its session cgroup and the
    # refusals counted there with it.
    "fork-bomb": ["sh", "-c", "sleep 3600 & bomb() { bomb | bomb & }; bomb; wait"],
    "memory-bomb": [
        "sh",
        "-c",
        "while :; do x=$(head -c 200000000 /dev/zero | tr '\\0' a); done",
    ],
    "spin": ["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do (while :; do :; done) & done; wait"],
    "disk-fill": [
        "sh",
        "-c",
        "i=0; while :; do dd if=/dev/zero of=/fill$i bs=1M 2>/dev/null; i=$((i+1)); done",
    ],
    "inode-fill": [
        "sh",
        "-c",
        "mkdir -p /many; i=0; while :; do true 2>/dev/null > /many/$i; i=$((i+1)); done",
    ],
}
FLOOD = "flood"


def percentiles(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "n": len(ordered),
        "p50": pick(0.50),
        "p90": pick(0.90),
        "p99": pick(0.99),
        "max": round(ordered[-1], 2),
        "mean": round(statistics.mean(ordered), 2),
    }


@dataclass
class AbuseReport:
    """What was measured from outside during the attack."""

    seconds: float = 0.0
    landed: dict[str, bool] = field(default_factory=dict)
    probe_ms: list[float] = field(default_factory=list)
    create_ms: list[float] = field(default_factory=list)
    create_failures: list[str] = field(default_factory=list)
    neighbour_exec_ms: list[float] = field(default_factory=list)
    neighbour_exec_failures: list[str] = field(default_factory=list)
    neighbour_echo_ms: list[float] = field(default_factory=list)
    neighbour_cpusets: set[str] = field(default_factory=set)
    neighbour_cpuset_before: str = ""
    host_free_before: int = 0
    host_free_min: int = 0
    image_bytes: dict[str, int] = field(default_factory=dict)
    quota_bytes: int = 0
    flood_bytes: int = 0
    neighbour_answers_after: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "seconds": round(self.seconds, 1),
            "landed": self.landed,
            "agentProbeMs": percentiles(self.probe_ms),
            "agentCreateMs": percentiles(self.create_ms),
            "agentCreateFailures": self.create_failures[:5],
            "neighbourExecMs": percentiles(self.neighbour_exec_ms),
            "neighbourExecFailures": self.neighbour_exec_failures[:5],
            "neighbourEchoMs": percentiles(self.neighbour_echo_ms),
            "neighbourCpuset": {
                "before": self.neighbour_cpuset_before,
                "seen": sorted(self.neighbour_cpusets),
                "unchanged": self.neighbour_cpusets == {self.neighbour_cpuset_before},
            },
            "hostDisk": {
                "freeBeforeBytes": self.host_free_before,
                "freeMinBytes": self.host_free_min,
                # Other writers on the host count here too; the images are the attackers' own.
                "takenBytes": self.host_free_before - self.host_free_min,
                "attackerImagesBytes": sum(self.image_bytes.values()),
                "attackerQuotasBytes": self.quota_bytes,
                "imagesWithinQuotas": sum(self.image_bytes.values()) <= self.quota_bytes,
            },
            "floodBytes": self.flood_bytes,
            "neighbourAnswersAfter": self.neighbour_answers_after,
        }


def _flood_reader(url: str, token: str, container: str, counter: Synchronized[int]) -> None:
    """A client of the flooding terminal, in a process of its own: reads and counts."""
    from websockets.sync.client import connect

    from tuxio.common import remotecommand as rc

    ws_url = url.replace("http", "ws", 1) + (
        f"/v1/containers/{container}/exec?tty=true&stdin=true&stdout=true"
        "&command=sh&command=-c&command=yes+flood+flood+flood+flood"
    )
    with (
        connect(
            ws_url,
            subprotocols=[rc.SUBPROTOCOLS[0]],  # type: ignore[list-item]
            additional_headers={"Authorization": f"Bearer {token}"},
            compression=None,
            max_size=None,
            proxy=None,
        ) as ws,
        contextlib.suppress(Exception),
    ):
        for message in ws:
            data = message if isinstance(message, bytes) else message.encode()
            frame = rc.decode_frame(data)
            if frame is not None and frame.channel == rc.STDOUT:
                with counter.get_lock():
                    counter.value += len(frame.data)


def _oom_kills(pid: int) -> int:
    if is_v2():
        events = (cgroup_dir(pid, "memory") / "memory.events").read_text()
        return int(events.split("oom_kill ")[1].split()[0])
    control = (cgroup_dir(pid, "memory") / "memory.oom_control").read_text()
    return int(control.split("oom_kill ")[1].split()[0])


def _pids_refused(pid: int) -> int:
    return pids_refused(pid)


def _allocated(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


def _free_bytes(path: Path) -> int:
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


async def _timed(call: Awaitable[httpx.Response]) -> tuple[float, httpx.Response]:
    started = time.perf_counter()
    response = await call
    return (time.perf_counter() - started) * 1000, response


async def _until(stop: asyncio.Event, interval: float, step: Callable[[], Awaitable[None]]) -> None:
    while not stop.is_set():
        await step()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def abuse(agent: Agent, seconds: float, deadline: float = 600) -> AbuseReport:
    """Start the six attacks and the neighbour, measure until every attack has landed and
    `seconds` have passed (AssertionError after `deadline`), then stop them all."""
    # The six attackers and the neighbour, each with QUOTA.
    report = AbuseReport(quota_bytes=QUOTA["disk"] * (len(ATTACKS) + 2))
    streams = remote.Streams()
    counter: Synchronized[int] = multiprocessing.get_context("spawn").Value("q", 0)
    flood_process = None
    attacks: list[asyncio.Task[Any]] = []
    async with agent.async_client() as api:
        inits: dict[str, int] = {}
        for name in [*ATTACKS, FLOOD, "quiet"]:
            limits = {**BOXED} if name != "quiet" else {"cpus": 1, **QUOTA}
            answer = await api.put(
                f"/v1/containers/{name}", json={"template": "busybox", "limits": limits}
            )
            assert answer.status_code == 200, answer.text
            inits[name] = answer.json()["pid"]
        quiet = inits["quiet"]
        report.neighbour_cpuset_before = (
            (cgroup_dir(quiet, "cpuset") / "cpuset.cpus").read_text().strip()
        )
        report.host_free_before = report.host_free_min = _free_bytes(agent.lxcpath)
        echo = await streams.open(agent, "quiet", remote.terminal(["sh"]))
        await echo.send("echo ready\r")
        await echo.expect(rb"ready\r?\n")

        for name, argv in ATTACKS.items():
            body = {"argv": argv, "timeoutSeconds": deadline}
            attacks.append(asyncio.create_task(api.post(f"/v1/containers/{name}/exec", json=body)))
        flood_process = multiprocessing.get_context("spawn").Process(
            target=_flood_reader, args=(agent.url, agent.token, FLOOD, counter), daemon=True
        )
        flood_process.start()

        stop = asyncio.Event()

        async def probe() -> None:
            elapsed, response = await _timed(api.get("/v1/containers"))
            if response.status_code == 200:
                report.probe_ms.append(elapsed)

        async def create() -> None:
            name = f"probe-{len(report.create_ms) + len(report.create_failures)}"
            spec = {"template": "busybox", "limits": {"cpus": 1, **QUOTA}}
            elapsed, response = await _timed(api.put(f"/v1/containers/{name}", json=spec))
            if response.status_code == 200:
                report.create_ms.append(elapsed)
            else:
                report.create_failures.append(f"{response.status_code}: {response.text[:200]}")
            await api.delete(f"/v1/containers/{name}")

        async def neighbour_exec() -> None:
            body = {"argv": ["echo", "hi"], "timeoutSeconds": 30}
            elapsed, response = await _timed(api.post("/v1/containers/quiet/exec", json=body))
            if response.status_code == 200 and response.json()["stdout"] == "hi\n":
                report.neighbour_exec_ms.append(elapsed)
            else:
                report.neighbour_exec_failures.append(f"{response.status_code}: {response.text}")

        async def neighbour_echo() -> None:
            mark = echo.mark()
            started = time.perf_counter()
            await echo.send("x")
            await echo.expect(b"x", since=mark)
            report.neighbour_echo_ms.append((time.perf_counter() - started) * 1000)
            if len(report.neighbour_echo_ms) % 40 == 0:
                await echo.send("\x15")  # ^U: an empty line again

        def watch() -> None:
            report.neighbour_cpusets.add(
                (cgroup_dir(quiet, "cpuset") / "cpuset.cpus").read_text().strip()
            )
            report.host_free_min = min(report.host_free_min, _free_bytes(agent.lxcpath))

        async def landed() -> bool:
            disks = {}
            for name in ("disk-fill", "inode-fill"):
                disks[name] = (await api.get(f"/v1/containers/{name}")).json()["disk"]
            spin = (await api.get("/v1/containers/spin")).json()["usage"]
            now = {
                "fork-bomb": _pids_refused(inits["fork-bomb"]) > 0,
                "memory-bomb": _oom_kills(inits["memory-bomb"]) > 0,
                "spin": spin is not None and spin["cpuSeconds"] >= SPIN_SECONDS,
                "disk-fill": disks["disk-fill"]["usedBytes"]
                >= 0.95 * disks["disk-fill"]["limitBytes"],
                "inode-fill": disks["inode-fill"]["usedInodes"]
                >= disks["inode-fill"]["limitInodes"],
                FLOOD: counter.value >= FLOOD_BYTES,
            }
            # An attack that has landed once stays landed (its counter may go with its cgroup).
            report.landed = {
                name: report.landed.get(name, False) or hit for name, hit in now.items()
            }
            return all(report.landed.values())

        async def watcher() -> None:
            watch()

        started = time.monotonic()
        loops = [
            asyncio.create_task(_until(stop, 0.02, probe)),
            asyncio.create_task(_until(stop, 0.2, create)),
            asyncio.create_task(_until(stop, 0.1, neighbour_exec)),
            asyncio.create_task(_until(stop, 0.05, neighbour_echo)),
            asyncio.create_task(_until(stop, 0.1, watcher)),
        ]
        try:
            while True:
                done = await landed()
                elapsed = time.monotonic() - started
                if done and elapsed >= seconds:
                    break
                if elapsed > deadline:
                    ended = {
                        name: task.result().text[:300]
                        if not task.exception()
                        else repr(task.exception())
                        for name, task in zip(ATTACKS, attacks, strict=True)
                        if task.done()
                    }
                    raise AssertionError(
                        f"not every attack landed: {report.landed}; attacks that ended: {ended}"
                    )
                failed = [loop for loop in loops if loop.done() and loop.exception()]
                if failed:
                    raise failed[0].exception()  # type: ignore[misc]
                await asyncio.sleep(0.25)
            report.seconds = time.monotonic() - started
            stop.set()
            await asyncio.gather(*loops)
            watch()
            report.flood_bytes = counter.value
            report.image_bytes = {
                name: _allocated(agent.lxcpath / name / "disk.img")
                for name in [*ATTACKS, FLOOD, "quiet"]
            }
            # After the attack, the neighbour still answers.
            after = await api.post(
                "/v1/containers/quiet/exec", json={"argv": ["echo", "still"], "timeoutSeconds": 60}
            )
            report.neighbour_answers_after = (
                after.status_code == 200 and after.json()["stdout"] == "still\n"
            )
        finally:
            stop.set()
            for loop in loops:
                loop.cancel()
            if flood_process is not None:
                flood_process.terminate()
                flood_process.join(30)
            await streams.aclose()
            for name in [*ATTACKS, FLOOD, "quiet"]:
                await api.delete(f"/v1/containers/{name}")
            for task in attacks:
                with contextlib.suppress(Exception):
                    await task
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/abuse.json"))
    parser.add_argument("--seconds", type=float, default=30, help="least length of the attack")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    agent = make_agent("abuse", [])
    try:
        agent.start()
        report = asyncio.run(abuse(agent, args.seconds))
    finally:
        agent.stop()
        destroy_everything(agent)
    document = {
        "benchmark": "abuse at once: six attacks next to a quiet neighbour",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cores": os.cpu_count(),
            "kernel": platform.release(),
            # The machine's own load before the attack, and at its end (attack included).
            "load1Before": round(load_before, 2),
            "load1After": round(os.getloadavg()[0], 2),
        },
        "attackerLimits": BOXED,
        "targets": {"agentP99Ms": 50, "neighbourEchoP99Ms": 20, "hostDiskTakenAtMost": "quotas"},
        **report.to_json(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print_table(document)
    print(f"\nwritten to {args.out}")
    return 0


def print_table(doc: dict[str, Any]) -> None:
    rows = [
        ("agent probe (GET list)", doc["agentProbeMs"]),
        ("agent create (PUT to running)", doc["agentCreateMs"]),
        ("neighbour exec", doc["neighbourExecMs"]),
        ("neighbour terminal echo", doc["neighbourEchoMs"]),
    ]
    print(f"\n{'during the attack (ms)':<32}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    for label, p in rows:
        if p.get("n"):
            print(f"{label:<32}{p['n']:>6}{p['p50']:>9}{p['p90']:>9}{p['p99']:>9}{p['max']:>9}")
    disk = doc["hostDisk"]
    images, quotas = disk["attackerImagesBytes"] / 2**20, disk["attackerQuotasBytes"] / 2**20
    print(
        f"\nattacks landed: {doc['landed']}; neighbour cpuset "
        f"{'unchanged' if doc['neighbourCpuset']['unchanged'] else 'CHANGED'} "
        f"({doc['neighbourCpuset']['before']}); attackers' images {images:.1f} MiB of "
        f"{quotas:.0f} MiB quotas; host free disk fell by {disk['takenBytes'] / 2**20:.1f} MiB"
    )


if __name__ == "__main__":
    sys.exit(main())
