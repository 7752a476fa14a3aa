"""Abuse at once, briefly: six attacks (fork bomb, memory bomb, all-core spinning, disk fill,
inode fill, output flood through a terminal) next to a quiet neighbour, on an agent of its own
with the default core reservation. The attack runs until every one of them has reached its
limit; then the containment facts must hold. Latencies are bench/abuse.py's to report."""

from __future__ import annotations

from bench.abuse import ATTACKS, FLOOD, QUOTA, abuse
from tests.support import destroy_everything, make_agent


async def test_six_attacks_at_once_stay_boxed_in() -> None:
    agent = make_agent("abuse", [])
    try:
        agent.start()
        report = await abuse(agent, seconds=0)
    finally:
        agent.stop()
        destroy_everything(agent)
    # Every attack reached its limit.
    assert report.landed == dict.fromkeys([*ATTACKS, FLOOD], True)
    # The neighbour kept its cores throughout, and kept answering.
    assert report.neighbour_cpusets == {report.neighbour_cpuset_before}
    assert report.neighbour_exec_ms and not report.neighbour_exec_failures
    assert report.neighbour_echo_ms
    assert report.neighbour_answers_after
    # The agent kept answering its probe and creating sandboxes.
    assert report.probe_ms
    assert report.create_ms and not report.create_failures
    # Each sandbox took at most its quota of the host's disk.
    assert set(report.image_bytes) == {*ATTACKS, FLOOD, "quiet"}
    assert all(0 < taken <= QUOTA["disk"] for taken in report.image_bytes.values())
    assert report.image_bytes["disk-fill"] >= QUOTA["disk"] // 2
