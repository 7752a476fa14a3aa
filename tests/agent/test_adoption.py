"""If-Match on PUT: adopting a container that others may be adopting too (compare-and-set)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from tests.support import Agent

WARM: dict[str, Any] = {
    "template": "busybox",
    "limits": {"cpus": 1, "memory": "64Mi", "pids": 64},
    "labels": {"tux.io/pool-uid": "p-1"},
}


def adopter(uid: str, memory: str = "96Mi") -> dict[str, Any]:
    return {**WARM, "limits": {**WARM["limits"], "memory": memory}, "labels": {"owner": uid}}


def test_etag_is_the_spec_hash(http: httpx.Client, name: str) -> None:
    made = http.put(f"/v1/containers/{name}", json=WARM)
    assert made.status_code == 200, made.text
    assert made.headers["etag"] == f'"{made.json()["specHash"]}"'
    seen = http.get(f"/v1/containers/{name}")
    assert seen.headers["etag"] == made.headers["etag"]


def test_if_match_adopts_once(http: httpx.Client, name: str) -> None:
    etag = http.put(f"/v1/containers/{name}", json=WARM).headers["etag"]
    first = http.put(f"/v1/containers/{name}", json=adopter("a"), headers={"If-Match": etag})
    assert first.status_code == 200, first.text
    assert first.json()["labels"] == {"owner": "a"}
    assert first.json()["limits"]["memory"] == 96 * 2**20
    assert first.headers["etag"] != etag
    second = http.put(f"/v1/containers/{name}", json=adopter("b"), headers={"If-Match": etag})
    assert second.status_code == 412, second.text
    assert second.json()["reason"] == "PreconditionFailed"
    # Nothing changed: still the first adopter's.
    assert http.get(f"/v1/containers/{name}").json()["labels"] == {"owner": "a"}
    # A list of tags matches any of them: the first adopter repeating itself still converges.
    again = http.put(
        f"/v1/containers/{name}",
        json=adopter("a"),
        headers={"If-Match": f"{etag}, {first.headers['etag']}"},
    )
    assert again.status_code == 200, again.text


@pytest.mark.parametrize(
    ("header", "status"),
    [
        ("*", 412),  # the container must exist
        ('"0123456789abcdef"', 412),
        ("not-quoted", 400),
        ('"a"b"', 400),
    ],
)
def test_if_match_on_a_missing_container(
    http: httpx.Client, agent: Agent, name: str, header: str, status: int
) -> None:
    answer = http.put(f"/v1/containers/{name}", json=WARM, headers={"If-Match": header})
    assert answer.status_code == status, answer.text
    assert answer.json()["reason"] == ("PreconditionFailed" if status == 412 else "MalformedHeader")
    assert not (agent.lxcpath / name).exists()  # refused: nothing was cloned


def test_weak_tags_never_match(http: httpx.Client, name: str) -> None:
    etag = http.put(f"/v1/containers/{name}", json=WARM).headers["etag"]
    answer = http.put(
        f"/v1/containers/{name}", json=adopter("a"), headers={"If-Match": f"W/{etag}"}
    )
    assert answer.status_code == 412, answer.text


async def test_concurrent_adopters_one_wins(agent: Agent, name: str) -> None:
    async with agent.async_client() as client:
        etag = (await client.put(f"/v1/containers/{name}", json=WARM)).headers["etag"]
        answers = await asyncio.gather(
            *(
                client.put(
                    f"/v1/containers/{name}", json=adopter(f"u{i}"), headers={"If-Match": etag}
                )
                for i in range(8)
            )
        )
        codes = sorted(a.status_code for a in answers)
        assert codes == [200] + [412] * 7, [a.text for a in answers]
        winner = next(a for a in answers if a.status_code == 200).json()["labels"]
        seen = (await client.get(f"/v1/containers/{name}")).json()
    assert seen["labels"] == winner


def test_if_none_match_creates_but_never_takes_over(http: httpx.Client, name: str) -> None:
    made = http.put(f"/v1/containers/{name}", json=WARM, headers={"If-None-Match": "*"})
    assert made.status_code == 200, made.text
    taken = http.put(f"/v1/containers/{name}", json=adopter("b"), headers={"If-None-Match": "*"})
    assert taken.status_code == 412, taken.text
    assert taken.json()["reason"] == "PreconditionFailed"
    assert http.get(f"/v1/containers/{name}").json()["labels"] == WARM["labels"]
