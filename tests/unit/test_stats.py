"""`tuxio stats` on a ledger with known rows: the exact figures, as JSON, a table, a chart."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tuxio.ledger.cli import main
from tuxio.ledger.records import Entry, SandboxFacts
from tuxio.ledger.store import Ledger

GIB = 2**30


def at(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 3 if day else 2, day or 28, hour, minute, second, tzinfo=UTC)


# (uid, cpus, memory, CPU seconds, events): four sandboxes on one host.
ROWS = [
    ("a", 1, GIB, 360.0, {"created": at(1, 0), "ready": at(1, 0, 0, 1), "deleted": at(1, 2)}),
    ("b", 2, GIB // 2, 720.0, {"created": at(1, 1), "ready": at(1, 1, 0, 1), "deleted": at(1, 3)}),
    ("c", 1, GIB, 0.0, {"created": at(1, 3, 30)}),  # never ready, still there at the end
    ("d", 1, GIB, 100.0, {"created": at(0, 23), "ready": at(0, 23, 0, 1), "deleted": at(1, 0, 30)}),
]


@pytest.fixture
def ledger_of_known_rows(ledger_url: str) -> str:
    ledger = Ledger.open(ledger_url)
    try:
        ledger.write(
            [
                Entry(
                    SandboxFacts(
                        uid=uid,
                        namespace="ns",
                        name=uid,
                        host="h1",
                        cpus=cpus,
                        memory_bytes=memory,
                        cpu_seconds=cpu,
                    ),
                    events,
                )
                for uid, cpus, memory, cpu, events in ROWS
            ]
        )
    finally:
        ledger.close()
    return ledger_url


def stats(url: str, tmp_path: Path, *extra: str) -> list[str]:
    density = tmp_path / "density.json"
    density.write_text(json.dumps({"sandboxes_per_gib": 30.0}))
    # A host that costs $1 an hour: 8760 a year.
    return [
        "stats",
        "--ledger",
        url,
        "--since",
        "2026-03-01T00:00:00Z",
        "--until",
        "2026-03-01T04:00:00Z",
        "--host-cost-per-year",
        "8760",
        "--host-cores",
        "8",
        "--host-memory-gib",
        "32",
        "--density",
        str(density),
        *extra,
    ]


def test_the_figures_of_known_rows(
    ledger_of_known_rows: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(stats(ledger_of_known_rows, tmp_path, "--json")) == 0
    found = json.loads(capsys.readouterr().out)
    # d began the day before: it counts from the period's start, and is no visitor of it.
    assert (found["sandboxes"], found["visitors"], found["active_visitors"]) == (4, 3, 2)
    assert found["daily_visitors"] == {"2026-03-01": 3}
    assert found["peak_concurrency"] == 2
    assert found["sandbox_hours"] == pytest.approx(2 + 2 + 0.5 + 0.5)
    assert found["cpu_seconds"] == pytest.approx(360 + 720 + 0 + 100)
    assert found["hosts"] == 1
    assert found["host_cpu_utilisation"] == pytest.approx(1180 / (8 * 4 * 3600))
    # GiB-seconds: a 7200, b 0.5 x 7200, c 1800, d 1800: 14400 of 32 x 14400.
    assert found["host_memory_utilisation"] == pytest.approx(1 / 32)
    assert found["host_cost"] == pytest.approx(4.0)
    assert found["cost_per_active_visitor"] == pytest.approx(2.0)
    assert found["cost_per_sandbox_hour"] == pytest.approx(0.8)
    # E2B: seconds x (cpus x 0.000014 + GiB x 0.0000045).
    e2b = 7200 * 0.0000185 + 7200 * (2 * 0.000014 + 0.5 * 0.0000045) + 2 * 1800 * 0.0000185
    assert found["per_second_name"] == "E2B"
    assert found["per_second_cost"] == pytest.approx(e2b)
    assert found["capacity_per_host"] == 960
    assert found["cost_per_sandbox_hour_at_capacity"] == pytest.approx(1 / 960)
    assert found["concurrency"] == [
        ["2026-03-01T00:00:00+00:00", 2],
        ["2026-03-01T00:30:00+00:00", 1],
        ["2026-03-01T01:00:00+00:00", 2],
        ["2026-03-01T02:00:00+00:00", 1],
        ["2026-03-01T03:00:00+00:00", 0],
        ["2026-03-01T03:30:00+00:00", 1],
        ["2026-03-01T04:00:00+00:00", 0],
    ]
    first, last = found["cost_over_time"][0], found["cost_over_time"][-1]
    assert first == ["2026-03-01T00:00:00+00:00", 0.0, 0.0]
    assert last[0] == "2026-03-01T04:00:00+00:00"
    assert last[1:] == [pytest.approx(4.0), pytest.approx(e2b)]


def test_the_table_and_the_chart(
    ledger_of_known_rows: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chart = tmp_path / "stats.png"
    assert main(stats(ledger_of_known_rows, tmp_path, "--plot", str(chart))) == 0
    lines = dict(line.split("  ", 1) for line in capsys.readouterr().out.splitlines())
    table = {k.strip(): v.strip() for k, v in lines.items()}
    assert table["visitors (active)"] == "3 (2)"
    assert table["peak concurrency"] == "2"
    assert table["sandbox-hours"] == "5.000"
    assert table["cost per active visitor"] == "$2.0000"
    assert table["cost per sandbox-hour"] == "$0.8000"
    assert table["same usage at E2B"] == "$0.4176"
    assert table["capacity per host"] == "960"
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_ledger_without_tables_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/empty.sqlite3"
    assert main(["stats", "--ledger", url]) == 2
    assert "cannot read the ledger" in capsys.readouterr().err
