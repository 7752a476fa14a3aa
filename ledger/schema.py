"""The ledger's tables: one row per sandbox, one per lifecycle event of a sandbox.

The migrations in tuxio.ledger.migrations create exactly these; a test compares them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Float, ForeignKey, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["EVENTS", "Base", "SandboxEvent", "SandboxRow"]

# The lifecycle events a sandbox can have, each at most once.
EVENTS = ("created", "claimed", "ready", "stopped", "deleted")


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "pk": "pk_%(table_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        }
    )


class SandboxRow(Base):
    """One sandbox: where it ran, what it was given, what it used, who asked for it."""

    __tablename__ = "sandboxes"

    uid: Mapped[str] = mapped_column(String(64), primary_key=True, comment="Sandbox UID")
    namespace: Mapped[str] = mapped_column(String(253))
    name: Mapped[str] = mapped_column(String(253))
    template: Mapped[str | None] = mapped_column(String(253))
    host: Mapped[str | None] = mapped_column(String(253))
    region: Mapped[str | None] = mapped_column(String(253))
    pool: Mapped[str | None] = mapped_column(String(253))
    launch: Mapped[str | None] = mapped_column(String(8), comment="warm or cold")
    cpus: Mapped[int | None] = mapped_column(Integer, comment="allocated cores")
    memory_bytes: Mapped[int | None] = mapped_column(BigInteger, comment="memory limit")
    disk_bytes: Mapped[int | None] = mapped_column(BigInteger, comment="disk limit, if any")
    cpu_seconds: Mapped[float | None] = mapped_column(Float, comment="CPU time used")
    memory_peak_bytes: Mapped[int | None] = mapped_column(BigInteger)
    disk_peak_bytes: Mapped[int | None] = mapped_column(BigInteger)
    country: Mapped[str | None] = mapped_column(String(8), comment="visitor's ISO country")
    creator: Mapped[str | None] = mapped_column(String(128), comment="web, kubectl, CI, ...")


class SandboxEvent(Base):
    """When one lifecycle event of a sandbox happened (the first time it did)."""

    __tablename__ = "sandbox_events"

    uid: Mapped[str] = mapped_column(
        String(64), ForeignKey("sandboxes.uid", ondelete="CASCADE"), primary_key=True
    )
    event: Mapped[str] = mapped_column(String(16), primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
