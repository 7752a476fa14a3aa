"""Flow control: a flood never grows the agent past its bounded buffer; the writer in the
container blocks instead, and Ctrl-C still brings the prompt back."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from tests import remote
from tests.agent.conftest import Container
from tests.support import Agent, bytes_written, pids_named, process_stat, rss_bytes

# The agent's buffer (2 MiB by default) plus what the ptys, lxc-attach, the socket buffers and
# the test client's queue hold, with room to spare; a flood without flow control passes it in
# well under a second.
WRITTEN_BOUND = 48 * 2**20
# The buffer, frames in flight and allocator slack.
RSS_GROWTH_BOUND = 24 * 2**20


def blocked(pid: int, seen: list[int]) -> bool:
    """Whether `pid` sleeps in a write and wrote nothing since the last look."""
    written = bytes_written(pid)
    stat = process_stat(pid)
    wchan = Path(f"/proc/{pid}/wchan").read_text()
    still = bool(seen) and seen[-1] == written
    seen.append(written)
    return still and stat is not None and stat[1] == "S" and wchan == "wait_woken"


async def test_flood_blocks_the_writer_and_bounds_the_agent(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    assert agent.proc is not None
    # A small queue: the test client stops reading its socket soon when it stops reading.
    stream = await streams.open(agent, container.name, remote.terminal(), max_queue=1)
    await stream.expect(r"# ")
    baseline = rss_bytes(agent.proc.pid)
    stream.reading.clear()  # a client that reads nothing
    await stream.send("yes\n")
    yes = (await remote.eventually(lambda: pids_named(container.init, "yes")))[0]  # type: ignore[index]
    seen: list[int] = []
    await remote.eventually(lambda: blocked(yes, seen), interval=0.5)
    growth = rss_bytes(agent.proc.pid) - baseline
    print(f"flood, no reader: yes blocked after {seen[-1]} bytes; agent RSS +{growth} bytes")
    assert seen[-1] < WRITTEN_BOUND
    assert growth < RSS_GROWTH_BOUND
    # A client that reads as fast as it can: the flood flows, the agent stays bounded.
    stream.reading.set()
    target = stream.received + 3 * 2**21  # three buffers' worth
    peak = 0
    while stream.received < target:
        await stream.wait_for(lambda seen=stream.received: stream.received > seen)  # type: ignore[misc]
        peak = max(peak, rss_bytes(agent.proc.pid))
        del stream.stdout[:-4096]
    print(f"flood, fast reader: agent RSS peak +{peak - baseline} bytes")
    assert peak - baseline < RSS_GROWTH_BOUND


async def test_ctrl_c_during_a_flood(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    stream = await streams.open(agent, container.name, remote.terminal())
    await stream.expect(r"# ")
    await stream.send("yes\n")
    await remote.eventually(lambda: pids_named(container.init, "yes"))
    await stream.wait_for(lambda: stream.received > 2**20)
    mark = stream.mark()
    sent = time.monotonic()
    await stream.send(b"\x03")
    await stream.expect(r"\^C\r\n[^\n]*# ", since=mark)
    elapsed = time.monotonic() - sent
    print(f"Ctrl-C during a flood: prompt back after {elapsed * 1000:.1f} ms")
    assert not pids_named(container.init, "yes")
    assert elapsed < 30  # generous: the machine is shared; the figure is printed above


async def test_flood_while_detached_fills_the_buffer_and_no_more(
    agent: Agent, container: Container, streams: remote.Streams
) -> None:
    assert agent.proc is not None
    session = uuid.uuid4().hex
    first = await streams.open(agent, container.name, remote.terminal(session=session))
    await first.expect(r"# ")
    baseline = rss_bytes(agent.proc.pid)
    await first.send("yes\n")
    yes = (await remote.eventually(lambda: pids_named(container.init, "yes")))[0]  # type: ignore[index]
    await first.drop()
    seen: list[int] = []
    await remote.eventually(lambda: blocked(yes, seen), interval=0.5)
    growth = rss_bytes(agent.proc.pid) - baseline
    print(f"flood, detached: yes blocked after {seen[-1]} bytes; agent RSS +{growth} bytes")
    assert seen[-1] < WRITTEN_BOUND
    assert growth < RSS_GROWTH_BOUND
    # What was kept while detached comes on attach, and the flood flows again.
    second = await streams.open(agent, container.name, remote.terminal(session=session))
    await second.wait_for(lambda: second.received > 2 * 2**21)
    assert bytes_written(yes) > seen[-1]
    await second.send(b"\x03")
    await remote.eventually(lambda: not pids_named(container.init, "yes"))
