"""The ledger: sandboxes and their lifecycle events.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sandboxes",
        sa.Column("uid", sa.String(64), nullable=False, comment="Sandbox UID"),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("name", sa.String(253), nullable=False),
        sa.Column("template", sa.String(253), nullable=True),
        sa.Column("host", sa.String(253), nullable=True),
        sa.Column("region", sa.String(253), nullable=True),
        sa.Column("pool", sa.String(253), nullable=True),
        sa.Column("launch", sa.String(8), nullable=True, comment="warm or cold"),
        sa.Column("cpus", sa.Integer(), nullable=True, comment="allocated cores"),
        sa.Column("memory_bytes", sa.BigInteger(), nullable=True, comment="memory limit"),
        sa.Column("disk_bytes", sa.BigInteger(), nullable=True, comment="disk limit, if any"),
        sa.Column("cpu_seconds", sa.Float(), nullable=True, comment="CPU time used"),
        sa.Column("memory_peak_bytes", sa.BigInteger(), nullable=True),
        sa.Column("disk_peak_bytes", sa.BigInteger(), nullable=True),
        sa.Column("country", sa.String(8), nullable=True, comment="visitor's ISO country"),
        sa.Column("creator", sa.String(128), nullable=True, comment="web, kubectl, CI, ..."),
        sa.PrimaryKeyConstraint("uid", name="pk_sandboxes"),
    )
    op.create_table(
        "sandbox_events",
        sa.Column("uid", sa.String(64), nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["uid"],
            ["sandboxes.uid"],
            name="fk_sandbox_events_uid_sandboxes",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("uid", "event", name="pk_sandbox_events"),
    )


def downgrade() -> None:
    op.drop_table("sandbox_events")
    op.drop_table("sandboxes")
