"""exec runs an argv inside, with exit codes, output caps and timeouts."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support import Agent


def exec_(http: httpx.Client, name: str, **body: Any) -> dict[str, Any]:
    response = http.post(f"/v1/containers/{name}/exec", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_uname_and_exit_codes(http: httpx.Client, name: str) -> None:
    http.put(f"/v1/containers/{name}", json={"template": "busybox"})
    result = exec_(http, name, argv=["uname", "-a"])
    assert result["exitCode"] == 0
    assert result["stdout"].startswith("Linux ")
    failing = exec_(http, name, argv=["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (failing["exitCode"], failing["stdout"], failing["stderr"]) == (7, "out\n", "err\n")
    missing = exec_(http, name, argv=["/no/such/program"])
    assert missing["exitCode"] == 127


def test_argv_is_not_a_shell(http: httpx.Client, name: str) -> None:
    http.put(f"/v1/containers/{name}", json={"template": "busybox"})
    result = exec_(http, name, argv=["echo", "$HOME; rm -rf /", "`id`"])
    assert result["stdout"] == "$HOME; rm -rf / `id`\n"


def test_environment_and_stdin(http: httpx.Client, name: str) -> None:
    http.put(f"/v1/containers/{name}", json={"template": "busybox"})
    env = exec_(http, name, argv=["env"], env={"GREETING": "hello"})["stdout"].splitlines()
    assert "GREETING=hello" in env
    assert any(line.startswith("PATH=") for line in env)
    assert not any(line.startswith("TUXIO_") for line in env), "the agent's env does not leak"
    assert exec_(http, name, argv=["cat"], stdin="piped\n")["stdout"] == "piped\n"


def test_output_is_capped(http: httpx.Client, name: str) -> None:
    http.put(f"/v1/containers/{name}", json={"template": "busybox"})
    result = exec_(http, name, argv=["head", "-c", "100000", "/dev/zero"], maxOutputBytes=1000)
    assert len(result["stdout"]) == 1000
    assert result["stdoutTruncated"] is True
    assert result["exitCode"] == 0


def test_timeout_kills_the_command(http: httpx.Client, agent: Agent, name: str) -> None:
    http.put(f"/v1/containers/{name}", json={"template": "busybox"})
    result = exec_(http, name, argv=["sleep", "300"], timeoutSeconds=1)
    assert result["timedOut"] is True
    assert result["exitCode"] is None
    assert result["durationSeconds"] < 30
    left = exec_(http, name, argv=["ps", "-o", "args"])["stdout"]
    assert "sleep 300" not in left


def test_exec_needs_a_running_container(http: httpx.Client, name: str) -> None:
    http.put(f"/v1/containers/{name}", json={"template": "busybox", "state": "stopped"})
    response = http.post(f"/v1/containers/{name}/exec", json={"argv": ["true"]})
    assert response.status_code == 409
    assert response.json()["reason"] == "ContainerNotRunning"
    assert http.post("/v1/containers/nope/exec", json={"argv": ["true"]}).status_code == 404
