"""The clients end to end: the SDK (`tuxio.client`) and the `kubectl tuxio` plugin against the
real API server with the gateway registered as its aggregated API (the gateway fixtures of
test_gateway), the real operator and a real agent over TLS with LXC. Every call authenticates
as a ServiceAccount bound to the built-in `edit` or `view` role, with a kubeconfig holding only
its token."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import kubernetes
import pytest

from tests.e2e import test_gateway as gw
from tests.e2e.conftest import Cluster, gone
from tests.e2e.test_pool import pool, wait_ready_replicas
from tests.support import wait_until
from tuxio.client import (
    AsyncClient,
    Client,
    SandboxForbidden,
    SandboxNotFound,
)

Custom = kubernetes.client.CustomObjectsApi

# The gateway's fixtures, shared with its own tests (module scope: this module starts its own).
gateway = gw.gateway
tls_host = gw.tls_host
people = gw.people


def _warm_pool(cluster: Cluster, custom: Custom, namespace: str, name: str, replicas: int) -> None:
    cluster.apply(pool(name, replicas, placement={"hostSelector": gw.HOST_LABEL}), "-n", namespace)
    wait_ready_replicas(custom, namespace, name, replicas, timeout=120)


async def test_sdk_from_pool_to_ready_exec_terminal_files_and_delete(
    cluster: Cluster, custom: Custom, gateway: Any, tls_host: Any, namespace: str, people: Any
) -> None:
    _warm_pool(cluster, custom, namespace, "warm", 1)
    async with AsyncClient(kubeconfig=str(people.editor.kubeconfig), namespace=namespace) as tux:
        sbx = await tux.create(
            pool="warm", client_ip="203.0.113.7", ttl_seconds=600, generate_name="visitor-",
            labels={"app": "web"}, timeout=60,
        )  # fmt: skip
        assert sbx.ready and sbx.phase == "Running" and sbx.host == "gateway-e2e"
        assert sbx.name.startswith("visitor-") and sbx.namespace == namespace
        body = custom.get_namespaced_custom_object(
            "tux.io", "v1alpha1", namespace, "sandboxes", sbx.name
        )
        assert body["spec"]["poolRef"] == {"name": "warm"}
        assert body["spec"]["lifetime"] == {"ttlSeconds": 600}
        assert body["spec"]["placement"]["clientIP"] == "203.0.113.7"
        assert body["metadata"]["labels"]["app"] == "web"
        assert body["metadata"]["uid"] == sbx.uid

        # exec, collected: stdout and stderr apart, the exit code, stdin counted exactly.
        result = await sbx.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (result.exit_code, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
        data = secrets.token_bytes(300_000)
        counted = await sbx.exec(["wc", "-c"], stdin=data)
        assert (counted.exit_code, counted.stdout.strip()) == (0, str(len(data)).encode())

        # exec, streamed: the first line arrives while the command still waits for its stdin.
        async def lines() -> Any:
            yield b"first\n"
            await seen_first.wait()
            yield b"second\n"

        seen_first = asyncio.Event()
        stream = sbx.exec_stream(
            ["sh", "-c", "read a; echo got-$a; read b; echo got-$b >&2"], stdin=lines()
        )
        chunks: list[tuple[str, bytes]] = []
        async for channel, chunk in stream:
            chunks.append((channel, chunk))
            if b"got-first" in chunk:
                seen_first.set()
        assert (
            b"".join(c for ch, c in chunks if ch == "stdout"),
            b"".join(c for ch, c in chunks if ch == "stderr"),
        ) == (b"got-first\n", b"got-second\n")
        assert stream.exit_code == 0

        # A terminal: a real tty, resized, resumed by its session id, then killed.
        term = await sbx.terminal(cols=100, rows=30)
        assert term.state == "created"
        await term.send(b"tty; stty size; export MARK=kept-$((1000+337))\r")
        seen = await term.read_until(b"30 100", timeout=60)
        assert b"/dev/pts/" in seen
        await term.resize(120, 40)
        await term.send(b"stty size\r")
        await term.read_until(b"40 120", timeout=60)
        session = term.session_id
        await term.close()
        again = await sbx.terminal(session=session)
        assert (again.state, again.session_id) == ("resumed", session)
        await again.send(b"echo $MARK\r")
        await again.read_until(b"kept-1337", timeout=60)
        await again.kill()
        resumed = await sbx.terminal(session=session)
        assert resumed.state == "created"  # the killed session is gone: a new one of that id
        await resumed.kill()

        # Files: write, read, list, remove; then a missing one.
        written = await sbx.files.write("/root/notes.txt", b"from the SDK\n", mode=0o600)
        assert (written["size"], written["mode"]) == (13, "0600")
        assert await sbx.files.read("/root/notes.txt") == b"from the SDK\n"
        assert "notes.txt" in [e["name"] for e in await sbx.files.list("/root")]
        await sbx.files.remove("/root/notes.txt")
        with pytest.raises(SandboxNotFound):
            await sbx.files.read("/root/notes.txt")

        # A visitor token, minted through RBAC.
        token = await sbx.token(scopes=["terminal", "files"], seconds=300)
        assert token.uid == sbx.uid and set(token.scopes) == {"terminal", "files"}

        got = await tux.get(sbx.name)
        assert got.uid == sbx.uid
        await sbx.delete(wait=True)
    assert gone(custom, namespace, sbx.name)


async def test_the_context_manager_deletes_the_sandbox(
    cluster: Cluster, custom: Custom, gateway: Any, tls_host: Any, namespace: str, people: Any
) -> None:
    async with AsyncClient(kubeconfig=str(people.editor.kubeconfig), namespace=namespace) as tux:
        assert tux.namespace == namespace
        async with await tux.create(
            template="busybox", name="scoped", cpus=1, memory="128Mi", pids=64,
            host_selector=gw.HOST_LABEL, timeout=60,
        ) as sbx:  # fmt: skip
            result = await sbx.exec(["cat", "/proc/self/cgroup"])
            assert result.exit_code == 0
            assert not gone(custom, namespace, "scoped")
        # Deleted on the way out: gone once the operator has let its finalizer go.
        wait_until(lambda: gone(custom, namespace, "scoped"), timeout=60)


def test_the_sync_face(
    cluster: Cluster, custom: Custom, gateway: Any, tls_host: Any, namespace: str, people: Any
) -> None:
    with Client(kubeconfig=str(people.editor.kubeconfig), namespace=namespace) as tux:
        assert tux.namespace == namespace
        with tux.create(
            template="busybox", name="plain", host_selector=gw.HOST_LABEL, timeout=60
        ) as sbx:
            result = sbx.exec(["sh", "-c", "echo $((6*7))"])
            assert (result.exit_code, result.stdout) == (0, b"42\n")
            out = b"".join(
                data for channel, data in sbx.exec_stream(["seq", "3"]) if channel == "stdout"
            )
            assert out == b"1\n2\n3\n"
            with sbx.terminal() as term:
                term.send("echo $((7*6))-sync\r")
                term.read_until(b"42-sync", timeout=60)
            sbx.files.write("/tmp/x", "sync")
            assert sbx.files.read("/tmp/x") == b"sync"
    wait_until(lambda: gone(custom, namespace, "plain"), timeout=60)


async def test_errors_for_a_missing_sandbox_and_a_view_only_user(
    cluster: Cluster, custom: Custom, gateway: Any, tls_host: Any, namespace: str, people: Any
) -> None:
    gw.running_sandbox(cluster, custom, namespace, "guarded")
    async with AsyncClient(kubeconfig=str(people.viewer.kubeconfig), namespace=namespace) as viewer:
        seen = await viewer.get("guarded")  # view may read the Sandbox...
        assert seen.phase == "Running"
        with pytest.raises(SandboxForbidden) as denied:  # ...but not go into it
            await seen.exec(["id"])
        assert denied.value.status == 403
        assert 'cannot get resource "sandboxes/exec"' in denied.value.message
        with pytest.raises(SandboxForbidden):
            await seen.terminal()
        with pytest.raises(SandboxForbidden):
            await seen.files.read("/etc/hostname")
        with pytest.raises(SandboxForbidden):
            await seen.token()
        with pytest.raises(SandboxForbidden):
            await viewer.create(template="busybox", name="not-mine", wait=False)
        with pytest.raises(SandboxForbidden):
            await seen.delete()
    async with AsyncClient(kubeconfig=str(people.editor.kubeconfig), namespace=namespace) as tux:
        with pytest.raises(SandboxNotFound) as missing:
            await tux.get("nowhere")
        assert missing.value.status == 404 and '"nowhere" not found' in missing.value.message
        sbx = await tux.get("guarded")
        await sbx.delete(wait=True)
        with pytest.raises(SandboxNotFound) as missing:  # the gateway's 404, before any upgrade
            await sbx.exec(["id"])
        assert missing.value.status == 404
        with pytest.raises(SandboxNotFound):
            await sbx.terminal()
