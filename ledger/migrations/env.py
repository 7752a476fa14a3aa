"""Alembic's environment: migrations run on the connection tuxio.ledger.store hands over."""

from __future__ import annotations

from alembic import context

from tuxio.ledger.schema import Base

connection = context.config.attributes["connection"]
# Transactional on both backends (SQLite through tuxio.ledger.store's BEGIN): a migration
# killed halfway leaves nothing behind.
context.configure(connection=connection, target_metadata=Base.metadata, transactional_ddl=True)
with context.begin_transaction():
    context.run_migrations()
