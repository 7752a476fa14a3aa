"""The debian template: debootstrap minbase from Debian's archive, tini as init, real LXC."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import AGENT, Agent, destroy_everything, host_uid, make_agent

# debootstrap keeps the packages here between runs, so only the first build downloads them.
CACHE = Path.home() / ".cache" / "tuxio" / "debootstrap"


@pytest.fixture(scope="module")
def debian_agent() -> Iterator[Agent]:
    agent = make_agent("debian", [])
    built = subprocess.run(
        [
            AGENT,
            "--data-dir",
            str(agent.data_dir),
            "template",
            "build",
            "debian",
            "--cache-dir",
            str(CACHE),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    agent.start()
    yield agent
    agent.stop()
    destroy_everything(agent)


def test_debian_template_is_unprivileged_and_stays_up(debian_agent: Agent) -> None:
    rootfs = (debian_agent.data_dir / "templates" / "debian" / "current" / "rootfs").resolve()
    assert rootfs.stat().st_uid == 100000, "the base is built owned by the unprivileged range"
    assert (rootfs / "usr" / "bin" / "passwd").stat().st_mode & 0o4000, (
        "set-uid bits survive the shift"
    )
    with debian_agent.client() as http:
        status = http.put(
            "/v1/containers/deb", json={"template": "debian", "limits": {"memory": "128Mi"}}
        ).json()
        assert status["state"] == "running", status
        assert host_uid(status["pid"]) == 100000
        version = http.post(
            "/v1/containers/deb/exec", json={"argv": ["cat", "/etc/debian_version"]}
        ).json()
        assert version["stdout"].startswith("12.")
        init = http.post(
            "/v1/containers/deb/exec", json={"argv": ["cat", "/proc/1/cmdline"]}
        ).json()
        assert init["stdout"].split("\x00")[0] == "/usr/bin/tini"
        apt = http.post(
            "/v1/containers/deb/exec", json={"argv": ["dpkg-query", "-W", "tini"]}
        ).json()
        assert apt["exitCode"] == 0
        host = http.get("/v1/host").json()
        templates = {t["name"]: t for t in host["templates"]}
        assert templates["debian"]["init"] == ["/usr/bin/tini", "--", "/bin/sleep", "infinity"]
        stopped = http.put(
            "/v1/containers/deb", json={"template": "debian", "state": "stopped"}
        ).json()
        assert stopped["state"] == "stopped"
        assert http.delete("/v1/containers/deb").json()["deleted"] is True
