"""The project-quota disk backend on a host whose kernel has quota support (`make
test-project-quota`; not part of `make test`: the kernel of the machines tuxio is developed on
lacks CONFIG_QFMT_V2 and CONFIG_XFS_QUOTA, and there this test fails at its first step with the
kernel's refusal to mount a filesystem with project quotas, see docs/disk.md).

A loop-mounted ext4 formatted with project quotas, mounted with prjquota, is the data
directory of an agent running `disk_backend project-quota`; then the same fills as the
ext4-image tests: ENOSPC at the quota, the inode limit, a neighbour that keeps writing, the
limits lifted on delete.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import AGENT, TEST_ROOT, Agent, destroy_everything, free_port

DISK = 64 * 2**20
INODES = 2048


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} failed: {done.stderr.strip()}"


@pytest.fixture(scope="module")
def agent() -> Iterator[Agent]:
    base = TEST_ROOT / f"project-quota-{uuid.uuid4().hex[:8]}"
    image, data_dir = base.with_suffix(".img"), base
    data_dir.mkdir(parents=True)
    _run("truncate", "-s", "2G", str(image))
    _run("mkfs.ext4", "-q", "-O", "quota,project", "-E", "quotatype=prjquota", str(image))
    try:
        _run("mount", "-o", "loop,prjquota", str(image), str(data_dir))
        run = [AGENT, "--data-dir", str(data_dir)]
        _run(*run, "template", "build", "busybox")
        _run(*run, "token", "generate", "--out", str(data_dir / "token"))
        token = (data_dir / "token").read_text().strip()
        running = Agent(
            data_dir,
            free_port(),
            token,
            ["--reserved-cpus", "0"],
            env={"TUXIO_AGENT_DISK_BACKEND": "project-quota"},
        )
        running.start()
        try:
            yield running
        finally:
            running.stop()
            destroy_everything(running)
    finally:
        subprocess.run(["umount", str(data_dir)], capture_output=True, check=False)
        image.unlink(missing_ok=True)
        subprocess.run(["rmdir", str(data_dir)], capture_output=True, check=False)


def put(http: httpx.Client, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    response = http.put(f"/v1/containers/{name}", json=spec)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def sh(http: httpx.Client, name: str, script: str) -> dict[str, Any]:
    response = http.post(
        f"/v1/containers/{name}/exec", json={"argv": ["sh", "-c", script], "timeoutSeconds": 600}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_project_quotas_hold(agent: Agent) -> None:
    spec = {"template": "busybox", "limits": {"disk": DISK, "inodes": INODES}}
    with agent.client() as http:
        assert http.get("/v1/host").json()["disk"]["backend"] == "project-quota"
        status = put(http, "filler", spec)
        assert status["disk"] == {
            "backend": "project-quota",
            "limitBytes": DISK,
            "usedBytes": status["disk"]["usedBytes"],
            "limitInodes": INODES,
            "usedInodes": status["disk"]["usedInodes"],
        }
        put(http, "neighbour", {"template": "busybox"})
        filled = sh(http, "filler", f"dd if=/dev/zero of=/fill bs=1M count={4 * DISK // 2**20}")
        assert "Disk quota exceeded" in filled["stderr"] or "No space" in filled["stderr"]
        used = http.get("/v1/containers/filler").json()["disk"]
        assert DISK // 2 <= used["usedBytes"] <= DISK
        sh(http, "filler", "rm /fill")
        made = sh(
            http, "filler", "i=0; while true 2>/dev/null > /f$i; do i=$((i+1)); done; echo $i"
        )
        assert int(made["stdout"].split()[-1]) <= INODES
        assert sh(http, "neighbour", "echo ok > /n && cat /n")["stdout"] == "ok\n"
        layer = agent.lxcpath / "filler" / "overlay"
        assert Path(layer).is_dir()
        assert http.delete("/v1/containers/filler").status_code == 200
        assert http.delete("/v1/containers/neighbour").status_code == 200
