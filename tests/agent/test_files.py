"""Files inside a container: round trips, ownership, atomic writes, listings, and every way
out of the container's root refused (traversal, symbolic links, magic links, devices, FIFOs,
pseudo filesystems), sizes over the cap refused."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.agent.conftest import Container, agent_with, run_container
from tests.support import Agent, wait_until

CAP = 2**20


@pytest.fixture(scope="module")
def files_agent() -> Iterator[Agent]:
    with agent_with("files", file_max_bytes=CAP) as running:
        yield running


def tmp_mounted(init: int) -> bool:
    """busybox init mounts a tmpfs on /tmp once it runs (after lxc-start returned)."""
    lines = Path(f"/proc/{init}/mountinfo").read_text().splitlines()
    return any(line.split()[4] == "/tmp" for line in lines)


@pytest.fixture
def box(files_agent: Agent, name: str) -> Iterator[Container]:
    container = run_container(files_agent, name)
    wait_until(lambda: tmp_mounted(container.init))
    yield container
    with files_agent.client() as http:
        http.delete(f"/v1/containers/{name}")


@pytest.fixture
def http(files_agent: Agent) -> Iterator[httpx.Client]:
    with files_agent.client() as client:
        yield client


def sh(http: httpx.Client, box: Container, script: str) -> dict[str, Any]:
    response = http.post(f"/v1/containers/{box.name}/exec", json={"argv": ["sh", "-c", script]})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    assert result["exitCode"] == 0, result
    return result


def files(box: Container) -> str:
    return f"/v1/containers/{box.name}/files"


def inside(box: Container, path: str) -> Path:
    """A path inside the container as the host sees it (for the test's own checks)."""
    return Path(f"/proc/{box.init}/root{path}")


def test_round_trip_owned_by_container_root(http: httpx.Client, box: Container) -> None:
    payload = os.urandom(CAP - 1)
    written = http.put(
        files(box), params={"path": "/root/blob.bin", "mode": "0640"}, content=payload
    )
    assert written.status_code == 200, written.text
    assert written.json() == {"path": "/root/blob.bin", "size": len(payload), "mode": "0640"}
    read = http.get(files(box), params={"path": "/root/blob.bin"})
    assert read.status_code == 200
    assert read.headers["content-type"] == "application/octet-stream"
    assert read.headers["x-file-mode"] == "0640"
    assert read.content == payload
    # Owned by the container's root: host uid and gid 100000, uid 0 inside.
    info = inside(box, "/root/blob.bin").stat()
    assert (info.st_uid, info.st_gid, oct(info.st_mode & 0o7777)) == (100000, 100000, "0o640")
    listed = sh(http, box, "ls -ln /root/blob.bin")["stdout"].split()
    assert (listed[2], listed[3]) == ("0", "0")


def test_write_is_atomic_and_leaves_no_temporary(http: httpx.Client, box: Container) -> None:
    sh(http, box, "echo old > /etc/motd")
    before = inside(box, "/etc/motd").stat().st_ino
    assert http.put(files(box), params={"path": "/etc/motd"}, content=b"new\n").status_code == 200
    assert http.get(files(box), params={"path": "/etc/motd"}).content == b"new\n"
    assert inside(box, "/etc/motd").stat().st_ino != before  # a new file renamed over it
    assert not [n for n in os.listdir(inside(box, "/etc")) if n.startswith(".tuxio-")]


def test_write_to_tmpfs_and_streamed_body(http: httpx.Client, box: Container) -> None:
    chunks = [os.urandom(100_000) for _ in range(5)]
    response = http.put(files(box), params={"path": "/tmp/streamed"}, content=iter(chunks))
    assert response.status_code == 200, response.text
    assert inside(box, "/tmp/streamed").read_bytes() == b"".join(chunks)
    assert inside(box, "/tmp/streamed").stat().st_uid == 100000


def test_symbolic_link_is_replaced_not_followed(http: httpx.Client, box: Container) -> None:
    sh(http, box, "echo keep > /root/target; ln -s /root/target /root/link")
    assert http.put(files(box), params={"path": "/root/link"}, content=b"x").status_code == 200
    assert inside(box, "/root/target").read_text() == "keep\n"
    assert not inside(box, "/root/link").is_symlink()


def test_directory_listing(http: httpx.Client, box: Container) -> None:
    sh(http, box, "mkdir /root/d && echo hi > /root/d/f && ln -s f /root/d/l && mkdir /root/d/sub")
    listing = http.get(files(box), params={"path": "/root/d"})
    assert listing.status_code == 200
    body = listing.json()
    assert body["path"] == "/root/d" and body["truncated"] is False
    entries = {e["name"]: (e["type"], e["size"]) for e in body["items"]}
    assert entries["f"] == ("file", 3)
    assert entries["l"][0] == "symlink"
    assert entries["sub"][0] == "directory"
    assert [e["name"] for e in body["items"]] == sorted(entries)
    assert all(e["mode"].startswith("0") and e["modifiedAt"] for e in body["items"])


def test_delete(http: httpx.Client, box: Container) -> None:
    sh(http, box, "echo x > /root/gone; mkdir /root/dir")
    response = http.delete(files(box), params={"path": "/root/gone"})
    assert response.json() == {"path": "/root/gone", "deleted": True}
    assert http.get(files(box), params={"path": "/root/gone"}).status_code == 404
    again = http.delete(files(box), params={"path": "/root/gone"})
    assert (again.status_code, again.json()["reason"]) == (404, "FileNotFound")
    directory = http.delete(files(box), params={"path": "/root/dir"})
    assert (directory.status_code, directory.json()["reason"]) == (400, "IsADirectory")


BAD_PATHS = [
    ("relative", "etc/passwd", "InvalidPath"),
    ("dot dot", "../../etc/shadow", "InvalidPath"),
    ("dot dot inside", "/etc/../../etc/shadow", "InvalidPath"),
    ("dot", "/etc/./passwd", "InvalidPath"),
    ("double slash", "/etc//passwd", "InvalidPath"),
    ("trailing slash", "/etc/", "InvalidPath"),
    ("empty", "", "InvalidPath"),
]


@pytest.mark.parametrize(
    ("path", "reason"), [c[1:] for c in BAD_PATHS], ids=[c[0] for c in BAD_PATHS]
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_paths_are_absolute_and_normalised(
    http: httpx.Client, box: Container, method: str, path: str, reason: str
) -> None:
    response = http.request(
        method, files(box), params={"path": path}, content=b"x" if method == "PUT" else None
    )
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == reason


def test_symbolic_links_resolve_inside_the_root(http: httpx.Client, box: Container) -> None:
    # An absolute link to / and a relative one climbing far above it both stay inside.
    sh(http, box, f"echo {box.name} > /etc/hostname")
    sh(http, box, "ln -s / /tmp/to-root; ln -s ../../../../../../../../etc /tmp/up")
    for path in ("/tmp/to-root/etc/hostname", "/tmp/up/hostname", "/tmp/to-root/tmp/up/hostname"):
        response = http.get(files(box), params={"path": path})
        assert response.status_code == 200, (path, response.text)
        assert response.content == f"{box.name}\n".encode()  # the container's, not the host's
    # A host path that exists only outside the container is not found from inside.
    sh(http, box, "ln -s /var/tmp/tuxio-tests /tmp/out")
    response = http.get(files(box), params={"path": "/tmp/out"})
    assert (response.status_code, response.json()["reason"]) == (404, "FileNotFound")
    # Writing through a link to / writes inside the container.
    assert (
        http.put(
            files(box), params={"path": "/tmp/to-root/root/via-link"}, content=b"in"
        ).status_code
        == 200
    )
    assert inside(box, "/root/via-link").read_bytes() == b"in"


# The agent is not in the container's PID namespace: /proc/self means nothing there, but
# the container's own processes are seen, and their magic links must not be followed.
MAGIC = [
    ("init's root", "/proc/1/root/etc/hostname"),
    ("init's cwd", "/proc/1/cwd"),
    ("descriptor", "/proc/1/fd/0"),
    ("executable", "/proc/1/exe"),
]


@pytest.mark.parametrize("path", [p for _, p in MAGIC], ids=[n for n, _ in MAGIC])
def test_magic_links_are_refused(http: httpx.Client, box: Container, path: str) -> None:
    response = http.get(files(box), params={"path": path})
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "InvalidPath"


SPECIAL = [
    ("device", "/dev/zero", "GET"),
    ("device write", "/dev/null", "PUT"),
    ("proc file", "/proc/1/status", "GET"),
    ("proc directory", "/proc/1", "GET"),
    ("sysfs", "/sys/kernel/uevent_seqnum", "GET"),
    ("cgroup", "/sys/fs/cgroup", "GET"),
]


@pytest.mark.parametrize(("path", "method"), [c[1:] for c in SPECIAL], ids=[c[0] for c in SPECIAL])
def test_devices_and_pseudo_filesystems_are_refused(
    http: httpx.Client, box: Container, path: str, method: str
) -> None:
    response = http.request(
        method, files(box), params={"path": path}, content=b"x" if method == "PUT" else None
    )
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "UnsupportedFileType"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_fifo_is_refused_without_blocking(http: httpx.Client, box: Container, method: str) -> None:
    sh(http, box, "mkfifo /tmp/fifo")
    started = time.monotonic()
    response = http.request(
        method, files(box), params={"path": "/tmp/fifo"}, content=b"x" if method == "PUT" else None
    )
    assert response.status_code == 400, response.text
    assert response.json()["reason"] == "UnsupportedFileType"
    assert inside(box, "/tmp/fifo").exists()
    assert time.monotonic() - started < 30  # answered: opening a FIFO to read would hang


def test_sizes_over_the_cap(http: httpx.Client, box: Container) -> None:
    too_big = http.put(files(box), params={"path": "/root/big"}, content=b"x" * (CAP + 1))
    assert (too_big.status_code, too_big.json()["reason"]) == (413, "FileTooLarge")
    streamed = http.put(files(box), params={"path": "/root/big"}, content=iter([b"x" * CAP, b"y"]))
    assert (streamed.status_code, streamed.json()["reason"]) == (413, "FileTooLarge")
    assert not inside(box, "/root/big").exists()
    assert not [n for n in os.listdir(inside(box, "/root")) if n.startswith(".tuxio-")]
    sh(http, box, f"head -c {CAP + 1} /dev/zero > /root/large")
    read = http.get(files(box), params={"path": "/root/large"})
    assert (read.status_code, read.json()["reason"]) == (413, "FileTooLarge")


BAD_WRITES = [
    ("missing directory", {"path": "/no/such/dir/file"}, 404, "FileNotFound"),
    ("onto a directory", {"path": "/etc"}, 400, "IsADirectory"),
    ("root", {"path": "/"}, 400, "IsADirectory"),
    ("bad mode", {"path": "/root/m", "mode": "rw-r--r--"}, 400, "InvalidPath"),
    ("mode too large", {"path": "/root/m", "mode": "17777"}, 400, "InvalidPath"),
    ("read-only proc", {"path": "/proc/sys/kernel/hostname"}, 400, "UnsupportedFileType"),
]


@pytest.mark.parametrize(
    ("params", "status", "reason"), [c[1:] for c in BAD_WRITES], ids=[c[0] for c in BAD_WRITES]
)
def test_bad_writes(
    http: httpx.Client, box: Container, params: dict[str, str], status: int, reason: str
) -> None:
    response = http.put(files(box), params=params, content=b"x")
    assert response.status_code == status, response.text
    assert response.json()["reason"] == reason


def test_container_must_exist_and_run(http: httpx.Client, files_agent: Agent, name: str) -> None:
    missing = http.get("/v1/containers/no-such-container/files", params={"path": "/etc"})
    assert (missing.status_code, missing.json()["reason"]) == (404, "ContainerNotFound")
    http.put(f"/v1/containers/{name}", json={"template": "busybox", "state": "stopped"})
    try:
        stopped = http.get(f"/v1/containers/{name}/files", params={"path": "/etc"})
        assert (stopped.status_code, stopped.json()["reason"]) == (409, "ContainerNotRunning")
    finally:
        http.delete(f"/v1/containers/{name}")
