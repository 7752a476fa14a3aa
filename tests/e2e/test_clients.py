"""The clients end to end: the SDK (`tuxio.client`) and the `kubectl tuxio` plugin against the
real API server with the gateway registered as its aggregated API (the gateway fixtures of
test_gateway), the real operator and a real agent over TLS with LXC. Every call authenticates
as a ServiceAccount bound to the built-in `edit` or `view` role, with a kubeconfig holding only
its token."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import kubernetes
import pexpect
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


# ----- the kubectl plugin ---------------------------------------------------------------------

PLUGIN_DIR = Path(sys.executable).parent  # kubectl-tuxio, the package's console script


def kubectl_tuxio(
    cluster: Cluster, person: Any, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """`kubectl tuxio ARGS` as the person would run it: kubectl finds the plugin on PATH."""
    return subprocess.run(
        [str(cluster.kubectl_bin), "tuxio", "--kubeconfig", str(person.kubeconfig), *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        env=_plugin_env(),
        timeout=120,
        check=False,
    )


def _plugin_env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{PLUGIN_DIR}:{os.environ['PATH']}"}


def test_the_plugin_is_found_by_kubectl(cluster: Cluster) -> None:
    listed = subprocess.run([str(cluster.kubectl_bin), "plugin", "list"], capture_output=True,
                            text=True, env=_plugin_env(), check=False)  # fmt: skip
    assert str(PLUGIN_DIR / "kubectl-tuxio") in listed.stdout, listed.stdout + listed.stderr


def test_plugin_shell_through_a_pseudo_terminal(
    cluster: Cluster, custom: Custom, gateway: Any, tls_host: Any, namespace: str, people: Any
) -> None:
    gw.running_sandbox(cluster, custom, namespace, "visitor-42")
    child = pexpect.spawn(
        str(cluster.kubectl_bin),
        ["tuxio", "--kubeconfig", str(people.editor.kubeconfig), "shell", "visitor-42", "-n", namespace],
        env=_plugin_env(), dimensions=(24, 80), timeout=60,
    )  # fmt: skip
    try:
        child.expect(r"# ")  # the login shell's prompt
        child.send("tty; stty size\r")
        child.expect(r"/dev/pts/\d+")
        child.expect(r"24 80")
        child.setwinsize(30, 100)  # the plugin's SIGWINCH, then a resize frame
        child.send("stty size\r")
        child.expect(r"30 100")
        child.send("echo $((1+1))-sleeping; sleep 100\r")
        child.expect(r"2-sleeping")
        # Raw mode: Ctrl-C goes to the sandbox, where it interrupts sleep. Sent again until the
        # prompt is back: one that reached the shell between its echo and sleep's start
        # interrupted nothing (found by make test-slow).
        deadline = time.monotonic() + 60
        while True:
            child.send("\x03")
            if child.expect([r"# ", pexpect.TIMEOUT], timeout=1) == 0:
                break
            assert time.monotonic() < deadline, "Ctrl-C never brought the prompt back"
        child.send("echo $((6*7))-after\r")
        child.expect(r"42-after")
        child.send("exit 7\r")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 7


def test_plugin_exec_pipes_stdin_and_keeps_stdout_and_stderr_apart(
    cluster: Cluster, custom: Custom, gateway: Any, tls_host: Any, namespace: str, people: Any
) -> None:
    gw.running_sandbox(cluster, custom, namespace, "runner")
    data = secrets.token_bytes(200_000)
    done = kubectl_tuxio(cluster, people.editor, "exec", "-i", "runner", "-n", namespace, "--",
                         "sh", "-c", "wc -c; echo to-stderr >&2; exit 5", stdin=data)  # fmt: skip
    assert done.returncode == 5, done.stderr
    assert (done.stdout.strip(), done.stderr) == (str(len(data)).encode(), b"to-stderr\n")
    done = kubectl_tuxio(
        cluster, people.editor, "exec", "runner", "-n", namespace, "--", "echo", "-n", "plain"
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, b"plain", b"")


def test_plugin_cp_both_ways(
    cluster: Cluster, custom: Custom, gateway: Any, tls_host: Any, namespace: str, people: Any,
    tmp_path: Path,
) -> None:  # fmt: skip
    gw.running_sandbox(cluster, custom, namespace, "filer")
    local = tmp_path / "up.bin"
    local.write_bytes(secrets.token_bytes(100_000))
    local.chmod(0o750)
    done = kubectl_tuxio(cluster, people.editor, "cp", str(local), f"{namespace}/filer:/root/")
    assert done.returncode == 0, done.stderr
    listed = kubectl_tuxio(cluster, people.editor, "exec", "filer", "-n", namespace, "--",
                           "stat", "-c", "%a %s", "/root/up.bin")  # fmt: skip
    assert listed.stdout.decode().split() == ["750", "100000"], listed.stderr
    back = tmp_path / "down.bin"
    done = kubectl_tuxio(
        cluster, people.editor, "-n", namespace, "cp", "filer:/root/up.bin", str(back)
    )
    assert done.returncode == 0, done.stderr
    assert back.read_bytes() == local.read_bytes()
    # A directory tree, up and down again.
    tree = tmp_path / "tree"
    (tree / "sub" / "deeper").mkdir(parents=True)
    (tree / "a.txt").write_text("a")
    (tree / "sub" / "deeper" / "b.txt").write_text("b")
    done = kubectl_tuxio(
        cluster, people.editor, "-n", namespace, "cp", str(tree), "filer:/root/tree"
    )
    assert done.returncode == 0, done.stderr
    copied = tmp_path / "copied"
    done = kubectl_tuxio(
        cluster, people.editor, "-n", namespace, "cp", "filer:/root/tree", str(copied)
    )
    assert done.returncode == 0, done.stderr
    assert (copied / "a.txt").read_text() == "a"
    assert (copied / "sub" / "deeper" / "b.txt").read_text() == "b"
    # stdin and stdout.
    done = kubectl_tuxio(
        cluster, people.editor, "-n", namespace, "cp", "-", "filer:/tmp/piped", stdin=b"piped in"
    )
    assert done.returncode == 0, done.stderr
    done = kubectl_tuxio(cluster, people.editor, "-n", namespace, "cp", "filer:/tmp/piped", "-")
    assert (done.returncode, done.stdout) == (0, b"piped in")


def test_plugin_token(
    cluster: Cluster, custom: Custom, gateway: Any, tls_host: Any, namespace: str, people: Any
) -> None:
    body = gw.running_sandbox(cluster, custom, namespace, "minted")
    done = kubectl_tuxio(cluster, people.editor, "-n", namespace, "token", "minted",
                         "--scope", "terminal", "--scope", "exec", "--duration", "120", "-o", "json")  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    claims = jwt.decode(answer["token"], options={"verify_signature": False})
    assert claims["sub"] == body["metadata"]["uid"] == answer["uid"]
    assert set(claims["scopes"]) == {"terminal", "exec"}
    assert claims["exp"] - claims["iat"] == 120
    plain = kubectl_tuxio(cluster, people.editor, "-n", namespace, "token", "minted")
    assert plain.returncode == 0 and plain.stdout.count(b".") == 2, plain.stderr


def test_plugin_errors(
    cluster: Cluster, custom: Custom, gateway: Any, tls_host: Any, namespace: str, people: Any
) -> None:
    gw.running_sandbox(cluster, custom, namespace, "guarded")
    done = kubectl_tuxio(cluster, people.editor, "-n", namespace, "exec", "nowhere", "--", "id")
    assert done.returncode == 1
    assert done.stderr.decode().startswith('error: sandboxes.tux.io "nowhere" not found'), (
        done.stderr
    )
    done = kubectl_tuxio(cluster, people.viewer, "-n", namespace, "exec", "guarded", "--", "id")
    assert done.returncode == 1
    assert (
        b'cannot get resource \\"sandboxes/exec\\"' in done.stderr
        or b'cannot get resource "sandboxes/exec"' in done.stderr
    ), done.stderr
    done = kubectl_tuxio(cluster, people.viewer, "-n", namespace, "shell", "guarded")
    assert done.returncode == 1 and b"forbidden" in done.stderr.lower(), done.stderr
    done = kubectl_tuxio(
        cluster, people.editor, "-n", namespace, "cp", "guarded:relative", "/tmp/x"
    )
    assert done.returncode == 1 and b"must be absolute" in done.stderr, done.stderr
