"""Usage export: the outbox of charged requests and each sink's cursor and dead letters.

Revision ID: 0004
Revises: 0003

`usage_outbox` gets one row per charged request (status success, with a customer) in the same transaction as its
spend log, only while a usage export sink is configured (`storage/outbox_repo.py`). Rows are read in (`txid`, `id`)
order: on PostgreSQL `txid` is the inserting transaction's id, and a reader takes only rows of transactions older
than every one still running, so a row can never appear behind a cursor that already passed it (SQLite writers are
serialised, `txid` stays 0 and `id` alone orders). `usage_export_cursors` holds, per sink name, the last row the sink
acknowledged; `usage_export_failures` the events a sink refused for good (4xx other than 429).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def _id() -> sa.types.TypeEngine[str]:
    return sa.String().with_variant(sa.String(collation="C"), "postgresql")


def _serial() -> sa.types.TypeEngine[int]:
    # SQLite: INTEGER PRIMARY KEY is the rowid; with AUTOINCREMENT (below) an id is never reused after a prune.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_outbox",
        sa.Column("id", _serial(), sa.Identity(always=False), nullable=False),
        sa.Column("txid", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("request_id", _id(), nullable=False),
        sa.Column("end_user", _id(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("custom_llm_provider", sa.String(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("spend", sa.BigInteger(), nullable=False),
        sa.Column("start_time", _utc(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_usage_outbox"),
        sa.UniqueConstraint("request_id", name="uq_usage_outbox_request_id"),
        sqlite_autoincrement=True,
    )
    if op.get_context().dialect.name == "postgresql":
        # The inserting transaction's id, so readers can skip rows of transactions still running (outbox_repo.py).
        op.execute(
            "ALTER TABLE usage_outbox ALTER COLUMN txid SET DEFAULT CAST(CAST(pg_current_xact_id() AS text) AS bigint)"
        )
    op.create_index("ix_usage_outbox_txid_id", "usage_outbox", ["txid", "id"])
    op.create_table(
        "usage_export_cursors",
        sa.Column("sink", _id(), nullable=False),
        sa.Column("last_txid", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_id", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("exported", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("failed", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("last_error_at", _utc(), nullable=True),
        sa.Column("last_success_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("sink", name="pk_usage_export_cursors"),
    )
    op.create_table(
        "usage_export_failures",
        sa.Column("sink", _id(), nullable=False),
        sa.Column("request_id", _id(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(), nullable=False),
        sa.Column("failed_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("sink", "request_id", name="pk_usage_export_failures"),
    )


def downgrade() -> None:
    op.drop_table("usage_export_failures")
    op.drop_table("usage_export_cursors")
    op.drop_index("ix_usage_outbox_txid_id", table_name="usage_outbox")
    op.drop_table("usage_outbox")
