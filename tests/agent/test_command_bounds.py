"""What bounds a command: its own cgroup, which takes everything it started with it (daemons
included), and the agent's output budget across all commands (nodeagent/budget.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import remote
from tests.agent.conftest import Container, agent_with, run_container
from tests.agent.test_flow import blocked
from tests.agent.test_metrics import scrape
from tests.support import Agent, bytes_written, cgroup_dir, pids_named


def exec_(http: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    response = http.post(f"/v1/containers/{name}/exec", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def session_cgroups(container: Container) -> list[Path]:
    return sorted(cgroup_dir(container.init, "pids").glob("tuxio-session-*"))


def test_an_exec_runs_in_a_cgroup_of_its_own_inside_the_container(
    http: httpx.Client, container: Container
) -> None:
    lines = exec_(http, container.name, argv=["cat", "/proc/self/cgroup"])["stdout"].splitlines()
    paths = {names: path for _, names, path in (line.split(":", 2) for line in lines)}
    # In the pids hierarchy (v1) or the unified one (v2): a cgroup of its own below the
    # container's; in every other hierarchy that limits (v1) the container's own (its cgroup
    # namespace's root), so every limit of the container holds for it. Not joined on v1: the
    # freezer and a hybrid host's controller-less unified hierarchy (session_cgroups).
    own = "" if set(paths) == {""} else "pids"
    assert paths[own].startswith("/tuxio-session-exec-"), paths
    limiting = {names: path for names, path in paths.items() if names not in (own, "freezer", "")}
    assert limiting == {names: "/" for names in limiting}, paths
    if own == "pids":
        assert {"cpu", "cpuset", "memory", "devices"} <= {
            controller for names in limiting for controller in names.split(",")
        }, paths
    # It was removed when the command ended.
    assert session_cgroups(container) == []


def test_a_daemon_dies_with_its_exec(http: httpx.Client, container: Container) -> None:
    # The daemon leaves the tree and the session (a subshell forks it, it calls setsid, the
    # subshell exits): the command answers only once it runs.
    daemonise = (
        "(setsid sleep 1006 </dev/null >/dev/null 2>&1 &); "
        "until pidof sleep >/dev/null; do :; done; echo started"
    )
    result = exec_(http, container.name, argv=["sh", "-c", daemonise])
    assert (result["exitCode"], result["stdout"]) == (0, "started\n")
    # The answer comes once everything the command started is gone.
    assert pids_named(container.init, "sleep") == []
    assert session_cgroups(container) == []


@pytest.fixture(scope="module")
def small_budget() -> Iterator[Agent]:
    """An agent whose commands may hold 1 MiB of output in all, each session 1 MiB."""
    with agent_with("budget", output_budget_bytes=2**20, session_buffer_bytes=2**20) as running:
        yield running


def test_an_exec_that_could_exceed_the_budget_is_refused(small_budget: Agent, name: str) -> None:
    run_container(small_budget, name)
    with small_budget.client() as http:
        response = http.post(
            f"/v1/containers/{name}/exec", json={"argv": ["true"], "maxOutputBytes": 2**20}
        )
        assert response.status_code == 429, response.text
        assert response.json()["reason"] == "OutputBudgetExhausted"
        assert "output_budget_bytes" in response.json()["message"]
        # One within it runs; what it reserved is given back.
        assert exec_(http, name, argv=["echo", "fits"], maxOutputBytes=1000)["stdout"] == "fits\n"
        http.delete(f"/v1/containers/{name}")
    assert scrape(small_budget)[("tuxio_agent_output_held_bytes", ())] == 0


async def test_floods_together_stay_within_the_budget(
    small_budget: Agent, name: str, streams: remote.Streams
) -> None:
    container = run_container(small_budget, name)
    budget = 2**20
    first = await streams.open(small_budget, name, remote.terminal(), max_queue=1)
    second = await streams.open(small_budget, name, remote.terminal(), max_queue=1)
    for stream in (first, second):
        await stream.expect(r"# ")
    # Both leave the terminal running and go: each session alone may buffer 1 MiB, so without
    # the budget the two would hold 2 MiB.
    await first.send("yes first\n")
    await second.send("yes second\n")
    await remote.eventually(lambda: len(pids_named(container.init, "yes")) == 2)
    flooders = pids_named(container.init, "yes")
    await first.drop()
    await second.drop()
    seen: dict[int, list[int]] = {pid: [] for pid in flooders}
    await remote.eventually(lambda: all(blocked(pid, seen[pid]) for pid in flooders), interval=0.5)
    held = scrape(small_budget)[("tuxio_agent_output_held_bytes", ())]
    print(f"two floods, no readers: the agent holds {held:.0f} bytes, budget {budget}")
    # At most one read (64 KiB) each past the budget.
    assert budget <= held <= budget + 2 * 64 * 2**10
    # A reader frees some: a waiting flood goes on (the one the budget stopped resumes).
    sessions = (await _terminal_ids(small_budget, name))[:2]
    before = {pid: bytes_written(pid) for pid in flooders}
    reader = await streams.open(small_budget, name, remote.terminal(session=sessions[0]))
    await reader.wait_for(lambda: reader.received > 2 * budget)
    await remote.eventually(lambda: all(bytes_written(p) > before[p] for p in flooders))
    held = scrape(small_budget)[("tuxio_agent_output_held_bytes", ())]
    assert held <= budget + 2 * 64 * 2**10


async def _terminal_ids(agent: Agent, name: str) -> list[str]:
    async with agent.async_client() as api:
        response = await api.get(f"/v1/containers/{name}/sessions")
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]
