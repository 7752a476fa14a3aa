"""What the ledger records of a Sandbox body (pure): the same body, the same entry."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.unit.fakes import sandbox
from tuxio.nodeagent.models import Usage
from tuxio.operator.ledger_entries import country_of, creator_of, entry_of

AT_READY = "2026-03-01T11:59:02Z"
AT_CLAIM = "2026-03-01T11:59:01Z"


def claimed(**status: Any) -> dict[str, Any]:
    body = sandbox(
        spec={"poolRef": {"name": "web"}, "resources": {"cpus": 1, "memory": "128Mi"}},
        status={
            "phase": "Running",
            "host": "h1",
            "containerName": "warm-1",
            "template": "debian",
            "fromPool": "web",
            "placement": {"reason": "Nearest", "clientLocation": "Amsterdam, NL"},
            "usage": {"cpuSeconds": 0.75, "memoryBytes": 9, "pids": 2, "observedAt": AT_READY},
            "conditions": [
                {
                    "type": "Scheduled",
                    "status": "True",
                    "reason": "ClaimedFromPool",
                    "lastTransitionTime": AT_CLAIM,
                },
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Running",
                    "lastTransitionTime": AT_READY,
                },
            ],
            **status,
        },
    )
    body["metadata"]["managedFields"] = [{"manager": "kubectl-create", "operation": "Update"}]
    return body


def test_a_claimed_running_sandbox() -> None:
    entry = entry_of(claimed(), lambda host: {"h1": "eu-west"}[host])
    facts = entry.facts
    assert (facts.uid, facts.namespace, facts.name) == ("uid-1", "ns", "s1")
    assert (facts.template, facts.host, facts.region, facts.pool, facts.launch) == (
        "debian",
        "h1",
        "eu-west",
        "web",
        "warm",
    )
    assert (facts.cpus, facts.memory_bytes, facts.cpu_seconds) == (1, 128 * 2**20, 0.75)
    assert (facts.country, facts.creator, facts.memory_peak_bytes) == ("NL", "kubectl", None)
    assert entry.events == {
        "created": datetime(2026, 3, 1, 11, 59, tzinfo=UTC),
        "claimed": datetime(2026, 3, 1, 11, 59, 1, tzinfo=UTC),
        "ready": datetime(2026, 3, 1, 11, 59, 2, tzinfo=UTC),
    }


def test_final_counters_replace_the_status_ones() -> None:
    final = Usage(cpu_seconds=3.5, memory_bytes=1, memory_peak_bytes=4096, pids=1)
    body = claimed()
    body["metadata"]["deletionTimestamp"] = "2026-03-01T12:10:00Z"
    entry = entry_of(body, lambda _: None, final)
    assert (entry.facts.cpu_seconds, entry.facts.memory_peak_bytes) == (3.5, 4096)
    assert entry.events["deleted"] == datetime(2026, 3, 1, 12, 10, tzinfo=UTC)


def test_a_sandbox_not_placed_yet_has_only_its_creation() -> None:
    entry = entry_of(sandbox(spec={"template": "busybox"}), lambda _: "never asked")
    assert (entry.facts.host, entry.facts.region, entry.facts.launch) == (None, None, None)
    assert entry.facts.template == "busybox"
    assert list(entry.events) == ["created"]


def test_a_cold_stopped_sandbox() -> None:
    body = claimed(
        conditions=[
            {
                "type": "Scheduled",
                "status": "True",
                "reason": "PoolEmpty",
                "lastTransitionTime": AT_CLAIM,
            },
            {
                "type": "Ready",
                "status": "False",
                "reason": "Stopped",
                "lastTransitionTime": AT_READY,
            },
        ]
    )
    entry = entry_of(body, lambda _: None)
    assert entry.facts.launch == "cold"
    assert set(entry.events) == {"created", "stopped"}


@pytest.mark.parametrize(
    ("location", "country"),
    [
        ("Amsterdam, NL", "NL"),
        ("NL", "NL"),
        ("São Paulo, BR", "BR"),
        ("unnamed place", None),
        ("Amsterdam, Netherlands", None),
        (None, None),
    ],
)
def test_country_of(location: str | None, country: str | None) -> None:
    assert country_of(location) == country


@pytest.mark.parametrize(
    ("meta", "creator"),
    [
        (
            {"labels": {"tux.io/created-by": "web"}, "managedFields": [{"manager": "kubectl"}]},
            "web",
        ),
        ({"annotations": {"tux.io/created-by": "ci"}}, "ci"),
        ({"managedFields": [{"manager": "kubectl-client-side-apply"}]}, "kubectl"),
        ({"managedFields": [{"manager": "tuxio-web"}, {"manager": "tuxio-operator"}]}, "tuxio-web"),
        ({}, None),
    ],
)
def test_creator_of(meta: dict[str, Any], creator: str | None) -> None:
    assert creator_of(meta) == creator
