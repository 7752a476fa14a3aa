"""The ledger's database, on SQLite and on a real PostgreSQL: the migrations make the schema
the models declare, and every write is idempotent."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tuxio.ledger.records import Entry, SandboxFacts
from tuxio.ledger.schema import Base
from tuxio.ledger.store import Ledger

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 1, 12, 0, 5, tzinfo=UTC)
T2 = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def facts(**known: object) -> SandboxFacts:
    return SandboxFacts(uid="u1", namespace="ns", name="s1", **known)  # type: ignore[arg-type]


def test_the_migrations_make_the_schema_the_models_declare(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    try:
        with ledger.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
        ledger.migrate()  # again: nothing to do, no error
    finally:
        ledger.close()


def test_a_batch_written_twice_counts_once(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    try:
        batch = [
            Entry(facts(template="debian", host="h1", cpus=1), {"created": T0, "ready": T1}),
            Entry(SandboxFacts(uid="u2", namespace="ns", name="s2"), {"created": T0}),
        ]
        ledger.write(batch)
        ledger.write(batch)
        assert ledger.counts() == (2, 3)
        assert sorted(ledger.events()) == [
            ("u1", "created", T0),
            ("u1", "ready", T1),
            ("u2", "created", T0),
        ]
    finally:
        ledger.close()


def test_an_older_observation_never_erases_or_shrinks_what_is_known(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    try:
        newer = facts(
            template="debian",
            host="h1",
            launch="warm",
            cpu_seconds=12.5,
            memory_peak_bytes=50_000_000,
            country="NL",
        )
        ledger.write([Entry(newer, {"created": T0, "deleted": T2})])
        # Written after it, as a restarted operator might: less known, smaller counters,
        # a later time for an event already recorded.
        older = facts(template="debian", cpu_seconds=3.0, creator="kubectl")
        ledger.write([Entry(older, {"created": T1})])
        (row,) = ledger.sandboxes()
        assert row == {
            "uid": "u1",
            "namespace": "ns",
            "name": "s1",
            "template": "debian",
            "host": "h1",
            "region": None,
            "pool": None,
            "launch": "warm",
            "cpus": None,
            "memory_bytes": None,
            "disk_bytes": None,
            "cpu_seconds": 12.5,
            "memory_peak_bytes": 50_000_000,
            "disk_peak_bytes": None,
            "country": "NL",
            "creator": "kubectl",
        }
        assert sorted(ledger.events()) == [("u1", "created", T0), ("u1", "deleted", T2)]
    finally:
        ledger.close()


def test_counters_grow_with_newer_observations(ledger_url: str) -> None:
    ledger = Ledger.open(ledger_url)
    try:
        ledger.write([Entry(facts(cpu_seconds=1.0))])
        ledger.write([Entry(facts(cpu_seconds=4.0, memory_peak_bytes=10))])
        (row,) = ledger.sandboxes()
        assert (row["cpu_seconds"], row["memory_peak_bytes"]) == (4.0, 10)
    finally:
        ledger.close()


def test_a_migration_that_fails_halfway_leaves_nothing_behind(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator killed in the middle of its first migration: on SQLite, pysqlite used to
    commit before each CREATE TABLE, so `sandboxes` stayed without an alembic_version row
    and every later start failed on "table sandboxes already exists". The migration fails
    here right after its first table, the next open must migrate cleanly."""
    from alembic.operations import Operations

    real = Operations.create_table
    calls = 0

    def create_then_die(self: Operations, *args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise RuntimeError("killed halfway")
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Operations, "create_table", create_then_die)
    with pytest.raises(RuntimeError, match="killed halfway"):
        Ledger.open(ledger_url)
    assert calls == 2  # the failure came after a table was made
    monkeypatch.setattr(Operations, "create_table", real)
    ledger = Ledger.open(ledger_url)
    try:
        with ledger.engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        assert diff == []
    finally:
        ledger.close()
