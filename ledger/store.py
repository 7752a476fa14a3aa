"""The ledger's database: opened by URL, migrated to the newest schema, written idempotently.

`Ledger.write` takes a batch of entries in one transaction: each sandbox row is upserted
(a known value replaces an unknown one, never the reverse; the counters only grow), each
event inserted unless that (UID, event) is there already, so a batch written twice, or an
older observation written after a newer one, changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, make_url

from .records import Entry
from .schema import Base, SandboxEvent, SandboxRow

__all__ = ["Ledger", "LedgerEvent", "LedgerSandbox"]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
_COUNTERS = ("cpu_seconds", "memory_peak_bytes", "disk_peak_bytes")
LedgerSandbox = dict[str, Any]
LedgerEvent = tuple[str, str, datetime]


def _utc(at: datetime) -> datetime:
    """SQLite gives datetimes back without a zone: they were written in UTC."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class Ledger:
    """One ledger database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> Ledger:
        """The ledger at `url` (sqlite:///path or postgresql+psycopg://...), its schema
        brought to the newest migration unless `migrate` is False."""
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
        ledger = cls(engine)
        if migrate:
            try:
                ledger.migrate()
            except BaseException:
                engine.dispose()  # no connection left open by a failed open
                raise
        return ledger

    def migrate(self, revision: str = "head") -> None:
        # Alembic is imported only to migrate: `tuxio stats` and the operator's import stay lean.
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def close(self) -> None:
        self.engine.dispose()

    # ----- writing -------------------------------------------------------------------

    def write(self, entries: Sequence[Entry]) -> None:
        """Record a batch in one transaction (idempotent; see the module docstring)."""
        if not entries:
            return
        with self.engine.begin() as connection:
            for entry in entries:
                self._upsert(connection, entry.facts.row())
            events = [
                {"uid": e.facts.uid, "event": name, "at": _utc(at)}
                for e in entries
                for name, at in e.events.items()
            ]
            if events:
                self._insert_events(connection, events)

    def _upsert(self, connection: Connection, row: dict[str, Any]) -> None:
        table = Base.metadata.tables[SandboxRow.__tablename__]
        if self.engine.dialect.name == "postgresql":
            pg = postgresql.insert(table).values(row)
            excluded = pg.excluded
            changes = {
                c: (
                    func.greatest(table.c[c], excluded[c])
                    if c in _COUNTERS
                    else func.coalesce(excluded[c], table.c[c])
                )
                for c in row
                if c != "uid"
            }
            connection.execute(pg.on_conflict_do_update(index_elements=["uid"], set_=changes))
            return
        lite = sqlite.insert(table).values(row)
        excluded = lite.excluded
        # SQLite's two-argument max() is NULL when either is: coalesce both sides first.
        changes = {
            c: (
                func.max(
                    func.coalesce(table.c[c], excluded[c]), func.coalesce(excluded[c], table.c[c])
                )
                if c in _COUNTERS
                else func.coalesce(excluded[c], table.c[c])
            )
            for c in row
            if c != "uid"
        }
        connection.execute(lite.on_conflict_do_update(index_elements=["uid"], set_=changes))

    def _insert_events(self, connection: Connection, events: list[dict[str, Any]]) -> None:
        table = Base.metadata.tables[SandboxEvent.__tablename__]
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement = dialect.insert(table).values(events).on_conflict_do_nothing()
        connection.execute(statement)

    # ----- reading -------------------------------------------------------------------

    def sandboxes(self) -> list[LedgerSandbox]:
        with self.engine.connect() as connection:
            table = Base.metadata.tables[SandboxRow.__tablename__]
            rows = connection.execute(select(table)).mappings().all()
        return [dict(r) for r in rows]

    def events(self) -> list[LedgerEvent]:
        table = Base.metadata.tables[SandboxEvent.__tablename__]
        with self.engine.connect() as connection:
            rows = connection.execute(
                select(table.c.uid, table.c.event, table.c.at).order_by(table.c.at)
            ).all()
        return [(uid, name, _utc(at)) for uid, name, at in rows]

    def counts(self) -> tuple[int, int]:
        """Rows in each table (sandboxes, events)."""
        with self.engine.connect() as connection:
            sandboxes = connection.scalar(select(func.count()).select_from(SandboxRow))
            events = connection.scalar(select(func.count()).select_from(SandboxEvent))
        return int(sandboxes or 0), int(events or 0)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL: `tuxio stats` reads while the operator writes; a writer waits for a lock
    rather than failing at once; and the foreign keys the schema declares hold.

    pysqlite's own transaction handling is turned off (SQLAlchemy's recipe for SQLite):
    it would commit before every CREATE TABLE, so a migration killed halfway left a table
    without its alembic_version row and every later start failed on "table already
    exists". _sqlite_begin emits a real BEGIN instead, and DDL is transactional."""
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN")
