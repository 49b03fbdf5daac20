"""Store identity and dead letters: `haimaker_meta` (the store's id, written once) and `dead_letters`.

Revision ID: 0002
Revises: 0001

`haimaker_meta.store_id` is a random id written when this migration runs, i.e. when the store is first created (or
first upgraded). A proxy remembers it locally and refuses to start against a store with another id or none: a deleted,
replaced or emptied database is never silently taken for a new one (`storage/store_identity.py`).

`dead_letters` holds the charges and resets the recorder could not write (a data error on that row alone): the item
as ASCII JSON text (never JSON/JSONB, so a NUL or an out-of-range number in it cannot break the insert), the
sanitised error, and a content hash as key so that a replayed item is filed once.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    meta = op.create_table(
        "haimaker_meta",
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_haimaker_meta"),
    )
    op.bulk_insert(meta, [{"key": "store_id", "value": uuid.uuid4().hex}])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_dead_letters"),
    )
    op.create_index("ix_dead_letters_created_at", "dead_letters", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_dead_letters_created_at", table_name="dead_letters")
    op.drop_table("dead_letters")
    op.drop_table("haimaker_meta")
