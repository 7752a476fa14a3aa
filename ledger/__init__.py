"""The usage ledger: what every sandbox was, used and cost, in a real database.

SQLite by default (one file, nothing to set up), PostgreSQL by URL; SQLAlchemy 2 with Alembic
migrations. Every write is idempotent (an upsert, or an insert that ignores a row already
there), so whoever writes may be killed and start again at any moment.
"""
