"""Virtual keys: `virtual_keys` (LiteLLM's `LiteLLM_VerificationToken`, by SHA-256 hex) and spend logs by key.

Revision ID: 0003
Revises: 0002

A key is stored only as `token`, the SHA-256 hex of the key as LiteLLM stores it, so keys imported from a LiteLLM
database keep working. `spend` is the key's spend in its current budget period (nano-dollars), charged in the same
transaction as the spend logs. The index on `spend_logs (api_key, start_time)` serves `/spend/logs?api_key=` and a
key's activity.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def _id() -> sa.types.TypeEngine[str]:
    return sa.String().with_variant(sa.String(collation="C"), "postgresql")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "virtual_keys",
        sa.Column("token", _id(), nullable=False),
        sa.Column("key_name", sa.String(), nullable=False),
        sa.Column("key_alias", _id(), nullable=True),
        sa.Column("expires", _utc(), nullable=True),
        sa.Column("models", _json(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("spend", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_budget", sa.BigInteger(), nullable=True),
        sa.Column("soft_budget", sa.BigInteger(), nullable=True),
        sa.Column("budget_duration", sa.String(), nullable=True),
        sa.Column("budget_reset_at", _utc(), nullable=True),
        sa.Column("rpm_limit", sa.BigInteger(), nullable=True),
        sa.Column("tpm_limit", sa.BigInteger(), nullable=True),
        sa.Column("max_parallel_requests", sa.Integer(), nullable=True),
        sa.Column("model_max_budget", _json(), nullable=True),
        sa.Column("model_rpm_limit", _json(), nullable=True),
        sa.Column("model_tpm_limit", _json(), nullable=True),
        sa.Column("metadata", _json(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("blocked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("key_type", sa.String(), server_default=sa.text("'default'"), nullable=False),
        sa.Column("allowed_routes", _json(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("end_user_budget_id", _id(), nullable=True),
        sa.Column("customer_id", _id(), nullable=True),
        sa.Column("user_id", sa.String(), nullable=True),
        sa.Column("team_id", sa.String(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("updated_by", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("token", name="pk_virtual_keys"),
    )
    op.create_index("ix_virtual_keys_key_alias", "virtual_keys", ["key_alias"])
    op.create_index("ix_spend_logs_api_key_start_time", "spend_logs", ["api_key", "start_time"])


def downgrade() -> None:
    op.drop_index("ix_spend_logs_api_key_start_time", table_name="spend_logs")
    op.drop_index("ix_virtual_keys_key_alias", table_name="virtual_keys")
    op.drop_table("virtual_keys")
