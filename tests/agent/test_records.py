"""A corrupt or truncated record never stops the agent: at restart that container is
quarantined (stopped, reported with the reason, refused but for DELETE) and the others come
back as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.agent.conftest import agent_with, run_container
from tests.support import wait_until

DAMAGE = {
    "truncated": lambda text: text[: len(text) // 2],
    "empty": lambda text: "",
    "garbled": lambda text: "\x00\xff not json at all",
    "wrong shape": lambda text: json.dumps({"name": "x"}),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_corrupt_record_quarantines_only_its_container(damage: str) -> None:
    with agent_with(f"records-{damage.replace(' ', '-')}") as agent:
        hurt, fine = run_container(agent, "hurt"), run_container(agent, "fine")
        record = agent.lxcpath / "hurt" / "tuxio.json"
        record.write_bytes(DAMAGE[damage](record.read_text()).encode("latin-1"))
        agent.stop()
        agent.start()  # it starts: the damage is one container's, not the agent's
        with agent.client() as http:
            host = http.get("/v1/host").json()
            (quarantined,) = host["quarantined"]
            assert quarantined["name"] == "hurt"
            assert str(record) in quarantined["reason"]
            # Stopped: what it is and whose it is are unknown.
            wait_until(lambda: not Path(f"/proc/{hurt.init}").exists(), timeout=90)
            for method, path in (
                ("GET", "/v1/containers/hurt"),
                ("PUT", "/v1/containers/hurt"),
            ):
                answer = http.request(method, path, json={"template": "busybox"})
                assert answer.status_code == 409, answer.text
                assert answer.json()["reason"] == "ContainerQuarantined"
                assert "corrupt" in answer.json()["message"]
            listed = [c["name"] for c in http.get("/v1/containers").json()["items"]]
            assert listed == ["fine"]
            # The neighbour came back as it was, still running the same init.
            seen = http.get("/v1/containers/fine").json()
            assert (seen["state"], seen["pid"]) == ("running", fine.init)
            assert Path(f"/proc/{fine.init}").exists()
            # DELETE is taken: the quarantine ends with the container.
            assert http.delete("/v1/containers/hurt").json()["deleted"] is True
            assert http.get("/v1/host").json()["quarantined"] == []
            assert not (agent.lxcpath / "hurt").exists()
            again = http.put("/v1/containers/hurt", json={"template": "busybox"})
            assert again.status_code == 200, again.text


def test_records_are_written_whole(tmp_path: Path) -> None:
    """No temporary file is left beside a record (it was synced and renamed)."""
    from tuxio.nodeagent.records import write_atomically

    target = tmp_path / "tuxio.json"
    write_atomically(target, '{"a": 1}\n')
    assert target.read_text() == '{"a": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tuxio.json"]


def test_a_clone_cut_short_by_a_kill_is_removed_at_restart() -> None:
    """A clone the agent was SIGKILLed in the middle of leaves a directory with neither
    record nor config (the record is written last but for the config). Found at restart, it
    is removed: else it held its disk and every PUT of that name failed with SpecConflict,
    the Sandbox that wanted it Failed for good (found by the chaos suite)."""
    import signal

    with agent_with("records-unfinished") as agent:
        fine = run_container(agent, "fine")
        agent.stop(signal.SIGKILL)
        half = agent.lxcpath / "half"
        (half / "rootfs").mkdir(parents=True)
        (half / "overlay").mkdir()
        foreign = agent.lxcpath / "foreign"  # an LXC config but no record: not the agent's
        foreign.mkdir()
        (foreign / "config").write_text("lxc.uts.name = foreign\n")
        agent.start()
        assert not half.exists()
        assert (foreign / "config").exists()
        with agent.client() as http:
            made = http.put("/v1/containers/half", json={"template": "busybox"})
            assert made.status_code == 200, made.text
            assert made.json()["state"] == "running"
            seen = http.get("/v1/containers/fine").json()
            assert (seen["state"], seen["pid"]) == ("running", fine.init)
            assert http.delete("/v1/containers/half").json()["deleted"] is True
        foreign.joinpath("config").unlink()
        foreign.rmdir()
