"""The rules shared by the agent and the operator: quantities, keyed locks, time, backoff."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from tuxio.common.locks import KeyedLocks
from tuxio.common.quantity import QUANTITY_PATTERN, parse_bytes, parse_quantity
from tuxio.common.timeutil import FixedClock, add_seconds, format_time, parse_time, seconds_since
from tuxio.nodeagent.models import Limits
from tuxio.operator.backoff import Backoff
from tuxio.operator.models import bytes_of, cores_of


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (268435456, 268435456),
        ("256Mi", 268435456),
        ("1Gi", 2**30),
        ("1G", 10**9),
        ("1.5Ki", 1536),
        ("512", 512),
        ("2k", 2000),
        ("2000m", 2),  # the Kubernetes grammar: milli is a suffix like any other
    ],
)
def test_byte_quantities(value: object, expected: int) -> None:
    assert parse_bytes(value) == expected
    assert bytes_of(value) == expected  # type: ignore[arg-type]  # the operator: one grammar


@pytest.mark.parametrize(
    "value", ["lots", "1.5", "-1Mi", "1Mb", "1K", "1e3", "1Pi", True, 1.5, None, "0.1Ki", "1m"]
)
def test_bad_byte_quantities(value: object) -> None:
    with pytest.raises(ValueError, match=r"quantity|whole number|boolean"):
        parse_bytes(value)


@pytest.mark.parametrize(
    ("value", "expected"), [("500m", Decimal("0.5")), (2, Decimal(2)), ("1.5", Decimal("1.5"))]
)
def test_quantities(value: object, expected: Decimal) -> None:
    assert parse_quantity(value) == expected
    assert cores_of(value) == float(expected)  # type: ignore[arg-type]


def test_agent_and_crds_share_the_pattern() -> None:
    schema = Limits.model_json_schema(by_alias=True)
    memory = schema["properties"]["memory"]
    assert {"type": "string", "pattern": QUANTITY_PATTERN} in memory["anyOf"]


async def test_keyed_locks_serialise_one_key_only() -> None:
    locks = KeyedLocks()
    order: list[str] = []
    entered = {tag: asyncio.Event() for tag in ("a1", "a2", "b1")}

    async def hold(key: str, tag: str, release: asyncio.Event) -> None:
        async with locks.hold(key):
            order.append(f"{tag} in")
            entered[tag].set()
            await release.wait()
            order.append(f"{tag} out")

    first, second, other = asyncio.Event(), asyncio.Event(), asyncio.Event()
    tasks = [
        asyncio.create_task(hold("a", "a1", first)),
        asyncio.create_task(hold("a", "a2", second)),
        asyncio.create_task(hold("b", "b1", other)),
    ]
    await asyncio.wait_for(asyncio.gather(entered["a1"].wait(), entered["b1"].wait()), 10)
    for _ in range(5):  # a2 gets its turns to try, and must wait
        await asyncio.sleep(0)
    assert order == ["a1 in", "b1 in"]  # a2 waits for a1, b runs beside it
    second.set()
    other.set()
    first.set()
    await asyncio.gather(*tasks)
    assert order.index("a1 out") < order.index("a2 in")
    assert len(locks) == 0  # nobody holds or waits: nothing is kept


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, 999, tzinfo=UTC), "2026-01-02T03:04:05Z"),
        (
            datetime(2026, 1, 2, 5, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-02T03:04:05Z",
        ),
    ],
)
def test_time_is_written_as_kubernetes_writes_it(when: datetime, text: str) -> None:
    assert format_time(when) == text
    assert parse_time(text) == when.replace(microsecond=0)


def test_time_arithmetic() -> None:
    assert add_seconds("2026-01-01T00:00:00Z", 90) == "2026-01-01T00:01:30Z"
    clock = FixedClock(datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC))
    assert seconds_since("2026-01-01T00:00:00Z", clock.now()) == 30
    assert seconds_since(None, clock.now()) == float("inf")
    clock.advance(5)
    assert (clock.now(), clock.monotonic()) == (datetime(2026, 1, 1, 0, 0, 35, tzinfo=UTC), 5)


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 2.0), (1, 4.0), (3, 16.0), (4, 30.0), (50, 30.0)]
)
def test_backoff_doubles_up_to_its_cap(failures: int, delay: float) -> None:
    assert Backoff(first=2.0, cap=30.0).delay(failures) == delay
