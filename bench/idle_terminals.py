#!/usr/bin/env python3
"""What an idle terminal costs on the host (a measurement, not a test).

Starts an agent of its own, opens N terminals (busybox login shells, a client attached to
each, spread over containers within the per-container cap), waits until every prompt is
there, then reads /proc: the agent's RSS growth per terminal, each lxc-attach's PSS (from
smaps_rollup: its share of what it maps, so the library pages all of them share count once),
and the shell's PSS inside the container. Then detaches every client and measures again.

    .venv/bin/python bench/idle_terminals.py --terminals 500 --out bench/results/idle-terminals.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests import remote
from tests.support import (
    Agent,
    destroy_everything,
    make_agent,
    pids_named,
    pss_bytes,
    rss_bytes,
)

PER_CONTAINER = 16


def attach_processes(agent: Agent) -> list[int]:
    assert agent.proc is not None
    children = Path(f"/proc/{agent.proc.pid}/task/{agent.proc.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def summary(values: list[int]) -> dict[str, float]:
    return {
        "mean_kib": round(statistics.mean(values) / 1024, 1),
        "median_kib": round(statistics.median(values) / 1024, 1),
        "max_kib": round(max(values) / 1024, 1),
    }


async def measure(terminals: int) -> dict[str, Any]:
    containers = (terminals + PER_CONTAINER - 1) // PER_CONTAINER
    env = {
        "TUXIO_AGENT_SESSIONS_PER_CONTAINER": str(PER_CONTAINER),
        "TUXIO_AGENT_SESSIONS_PER_AGENT": str(max(terminals, 2048)),
    }
    agent = make_agent("idle-terminals", ["--reserved-cpus", "0"], env)
    agent.start()
    assert agent.proc is not None
    streams = remote.Streams()
    try:
        inits = []
        async with agent.async_client() as api:
            for index in range(containers):
                spec = {"template": "busybox", "limits": {"memory": "64Mi", "pids": 64}}
                response = await api.put(f"/v1/containers/idle-{index}", json=spec)
                assert response.status_code == 200, response.text
                inits.append(response.json()["pid"])
        baseline = rss_bytes(agent.proc.pid)
        started = time.monotonic()
        opened = []
        for index in range(terminals):
            opened.append(
                await streams.open(agent, f"idle-{index // PER_CONTAINER}", remote.terminal())
            )
        for stream in opened:
            await stream.expect(r"# ", timeout=300)
        open_seconds = time.monotonic() - started
        attached_rss = rss_bytes(agent.proc.pid)
        attach = [pss_bytes(pid) for pid in attach_processes(agent)]
        shells = [pss_bytes(pid) for init in inits for pid in pids_named(init, "sh")]
        for stream in opened:
            await stream.drop()
        await asyncio.sleep(2)  # the agent notices the drops (a measurement, not a test)
        detached_rss = rss_bytes(agent.proc.pid)

        def per_terminal(growth: int) -> float:
            return round(growth / terminals / 1024, 1)

        return {
            "terminals": terminals,
            "containers": containers,
            "open_all_seconds": round(open_seconds, 2),
            "agent_rss_baseline_kib": baseline // 1024,
            "agent_rss_per_terminal_attached_kib": per_terminal(attached_rss - baseline),
            "agent_rss_per_terminal_detached_kib": per_terminal(detached_rss - baseline),
            "lxc_attach_pss": summary(attach),
            "shell_pss_in_container": summary(shells),
            "host_kib_per_terminal_attached": round(
                ((attached_rss - baseline) / terminals + statistics.mean(attach)) / 1024, 1
            ),
        }
    finally:
        await streams.aclose()
        agent.stop()
        destroy_everything(agent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--terminals", type=int, default=100)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = asyncio.run(measure(args.terminals))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
