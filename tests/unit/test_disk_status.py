"""Disk in the statuses: the host's free disk and inodes in SandboxHost status, and what the
scheduler reads back from it; a sandbox's disk use in its usage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.unit.fakes import container, host_info
from tuxio.nodeagent.models import ContainerStatus, HostInfo
from tuxio.operator.host_status import healthy_status
from tuxio.operator.records import host_record
from tuxio.operator.sandbox_status import usage_of

GiB = 2**30
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC = {
    "endpoint": "https://h1:7443",
    "credentialsSecretRef": {"name": "agent", "namespace": "tuxio-system"},
}


def info(**disk: Any) -> HostInfo:
    raw = host_info()
    raw["disk"] = {**raw["disk"], **disk}
    return HostInfo.model_validate(raw)


def test_host_status_reports_disk_and_the_scheduler_reads_it() -> None:
    status = healthy_status({}, info(), [], [], heartbeat_every=60, now=NOW)
    capacity = status["capacity"]
    assert capacity["diskBytes"] == 98 * GiB  # the filesystem less the agent's reserve
    assert capacity["diskFreeBytes"] == 60 * GiB
    assert capacity["diskInodes"] == 6_000_000 and capacity["diskFreeInodes"] == 5_000_000
    assert capacity["diskDefaultBytes"] == GiB
    assert capacity["diskBelowReserve"] is False
    assert capacity["diskBackend"] == "ext4-image"
    view = host_record("h1", {"spec": SPEC, "status": status}).view
    assert view.disk_bytes == 98 * GiB
    assert view.disk_default_bytes == GiB
    assert view.disk_below_reserve is False


@pytest.mark.parametrize(
    ("change", "written"),
    [
        ({"freeBytes": 59 * GiB}, False),  # free space moves all the time: no write for it
        ({"belowReserve": True}, True),  # the scheduler must know at once
        ({"totalBytes": 200 * GiB}, True),
    ],
)
def test_only_steady_disk_changes_warrant_a_write(change: dict[str, Any], written: bool) -> None:
    first = healthy_status({}, info(), [], [], heartbeat_every=60, now=NOW)
    later = NOW.replace(second=10)
    second = healthy_status(first, info(**change), [], [], heartbeat_every=60, now=later)
    assert (second["heartbeat"] != first["heartbeat"]) is written


def test_an_agent_without_disk_reports_leaves_disk_uncounted() -> None:
    raw = host_info()
    del raw["disk"]
    status = healthy_status({}, HostInfo.model_validate(raw), [], [], 60, NOW)
    assert "diskBytes" not in status["capacity"]
    view = host_record("h1", {"spec": SPEC, "status": status}).view
    assert view.disk_bytes is None


def test_sandbox_usage_carries_its_disk() -> None:
    raw = container("c1", {"template": "busybox"})
    raw["disk"] = {
        "backend": "ext4-image",
        "limitBytes": 1_000_000,
        "usedBytes": 4096,
        "limitInodes": 2048,
        "usedInodes": 13,
    }
    usage = usage_of(ContainerStatus.model_validate(raw), "2026-03-01T12:00:00Z")
    assert usage is not None
    assert usage["diskBytes"] == 4096 and usage["diskLimitBytes"] == 1_000_000
    assert usage["inodes"] == 13 and usage["inodesLimit"] == 2048
