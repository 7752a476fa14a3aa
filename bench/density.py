#!/usr/bin/env python3
"""How many visitor-class sandboxes one host holds at once (a measurement, not a test).

Visitor-class: the debian template, default limits, an interactive shell running in each
(a terminal with a client attached, as a visitor's browser keeps one). Starts an agent of its
own, then adds sandboxes one at a time until something gives: the agent refuses or fails a
create, a shell's prompt does not come, the host's available memory falls below the reserve,
or --max is reached. Records the host memory each sandbox takes, two ways: the fall of
MemAvailable per sandbox, and the proportional set size (PSS) of everything a sandbox runs
on the host (its cgroup's processes and the lxc-attach of its terminal), and from the latter
(steadier on a shared machine) sandboxes per GiB.

    make bench-density   # bench/results/density.json
    .venv/bin/python bench/density.py --max 5 --out /tmp/density.json   # a brief run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import remote
from tests.support import (
    AGENT,
    Agent,
    cgroup_processes,
    destroy_everything,
    make_agent,
    pss_bytes,
)

GIB = 2**30
CACHE = "/var/cache/tuxio/debootstrap"
TARGET_PER_GIB = 30


def meminfo() -> dict[str, int]:
    found = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, value = line.split(":", 1)
        found[key] = int(value.split()[0]) * 1024
    return found


def attach_processes(agent: Agent) -> list[int]:
    assert agent.proc is not None
    children = Path(f"/proc/{agent.proc.pid}/task/{agent.proc.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def host_pss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += pss_bytes(pid)
        except (OSError, ValueError):
            continue  # gone meanwhile
    return total


def build_debian(agent: Agent) -> None:
    built = subprocess.run(
        [
            AGENT,
            "--data-dir",
            str(agent.data_dir),
            "template",
            "build",
            "debian",
            "--cache-dir",
            CACHE,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        raise SystemExit(f"building the debian template failed:\n{built.stderr[-2000:]}")


async def measure(maximum: int, reserve_bytes: int, prompt_timeout: float) -> dict[str, Any]:
    agent = make_agent("density", ["--reserved-cpus", "0"])
    streams = remote.Streams()
    inits: list[int] = []
    stopped_by = f"--max {maximum} reached"
    try:
        build_debian(agent)
        agent.start()
        before = meminfo()
        started = time.monotonic()
        async with agent.async_client() as api:
            for index in range(maximum):
                if meminfo()["MemAvailable"] < reserve_bytes:
                    reserve = reserve_bytes // 2**20
                    stopped_by = f"host memory available fell below the reserve ({reserve} MiB)"
                    break
                response = await api.put(
                    f"/v1/containers/density-{index}", json={"template": "debian"}
                )
                if response.status_code != 200:
                    stopped_by = (
                        f"create {index} refused: {response.status_code} {response.text[:300]}"
                    )
                    break
                inits.append(response.json()["pid"])
                try:
                    shell = await streams.open(
                        agent, f"density-{index}", remote.terminal(["/bin/bash", "-i"])
                    )
                    await shell.expect(r"[#$] ", timeout=prompt_timeout)
                except AssertionError as exc:
                    stopped_by = f"shell {index} gave no prompt: {str(exc)[:300]}"
                    break
        held = len(inits)
        seconds = time.monotonic() - started
        after = meminfo()
        per_sandbox_pss = [host_pss(cgroup_processes(init)) for init in inits]
        attach = host_pss(attach_processes(agent))
        available_drop = (before["MemAvailable"] - after["MemAvailable"]) / held if held else 0.0
        mean_pss = (statistics.mean(per_sandbox_pss) + attach / held) if held else 0.0
        per_gib = GIB / mean_pss if mean_pss else 0.0
        return {
            "template": "debian",
            "limits": "the agent's defaults",
            "sandboxes_held": held,
            "stopped_by": stopped_by,
            "seconds_to_fill": round(seconds, 1),
            "host_memory_total_bytes": before["MemTotal"],
            "host_bytes_per_sandbox_pss": round(mean_pss),
            "host_bytes_per_sandbox_memavailable": round(available_drop),
            "container_pss_median_bytes": round(statistics.median(per_sandbox_pss)) if held else 0,
            "terminal_attach_pss_per_sandbox_bytes": round(attach / held) if held else 0,
            "sandboxes_per_gib": round(per_gib, 1),
            "sandboxes_per_gib_by_memavailable": round(GIB / available_drop, 1)
            if available_drop > 0
            else None,
            "target_per_gib": TARGET_PER_GIB,
            "meets_target": per_gib >= TARGET_PER_GIB,
        }
    finally:
        await streams.aclose()
        agent.stop()
        destroy_everything(agent)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--max", type=int, default=2000, help="stop after this many sandboxes")
    parser.add_argument("--reserve-mib", type=int, default=1024, help="host memory kept available")
    parser.add_argument("--prompt-timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(measure(args.max, args.reserve_mib * 2**20, args.prompt_timeout))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
