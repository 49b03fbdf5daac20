"""Initial schema: budgets, customers, spend_logs, daily_customer_spend.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _id() -> sa.types.TypeEngine[str]:
    # Byte-wise ordering on PostgreSQL too, to match SQLite and Python's sorted().
    return sa.String().with_variant(sa.String(collation="C"), "postgresql")


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "budgets",
        sa.Column("budget_id", _id(), nullable=False),
        sa.Column("max_budget", sa.BigInteger(), nullable=True),
        sa.Column("soft_budget", sa.BigInteger(), nullable=True),
        sa.Column("max_parallel_requests", sa.Integer(), nullable=True),
        sa.Column("tpm_limit", sa.BigInteger(), nullable=True),
        sa.Column("rpm_limit", sa.BigInteger(), nullable=True),
        sa.Column("tpd_limit", sa.BigInteger(), nullable=True),
        sa.Column("model_max_budget", _json(), nullable=True),
        sa.Column("budget_duration", sa.String(), nullable=True),
        sa.Column("budget_reset_at", _utc(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.Column("updated_by", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("budget_id", name="pk_budgets"),
    )
    op.create_table(
        "customers",
        sa.Column("user_id", _id(), nullable=False),
        sa.Column("alias", sa.String(), nullable=True),
        sa.Column("spend", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("blocked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("allowed_model_region", sa.String(), nullable=True),
        sa.Column("default_model", sa.String(), nullable=True),
        sa.Column("models", _json(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("budget_id", _id(), nullable=True),
        sa.Column("spend_reset_at", _utc(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.ForeignKeyConstraint(
            ["budget_id"],
            ["budgets.budget_id"],
            name="fk_customers_budget_id_budgets",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("user_id", name="pk_customers"),
    )
    op.create_index("ix_customers_budget_id", "customers", ["budget_id"])
    op.create_table(
        "spend_logs",
        sa.Column("request_id", _id(), nullable=False),
        sa.Column("end_user", _id(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("model_id", sa.String(), nullable=False),
        sa.Column("model_group", sa.String(), nullable=False),
        sa.Column("custom_llm_provider", sa.String(), nullable=False),
        sa.Column("call_type", sa.String(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("total_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_read_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cache_creation_input_tokens", sa.BigInteger(), nullable=False),
        sa.Column("spend", sa.BigInteger(), nullable=False),
        sa.Column("start_time", _utc(), nullable=False),
        sa.Column("end_time", _utc(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("api_key", sa.String(), nullable=False),
        sa.Column("metadata", _json(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", name="pk_spend_logs"),
    )
    op.create_index("ix_spend_logs_end_user_start_time", "spend_logs", ["end_user", "start_time"])
    op.create_index("ix_spend_logs_start_time", "spend_logs", ["start_time"])
    counters = [
        "prompt_tokens",
        "completion_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "spend",
        "api_requests",
        "successful_requests",
        "failed_requests",
    ]
    op.create_table(
        "daily_customer_spend",
        sa.Column("end_user_id", _id(), nullable=False),
        sa.Column("date", sa.String(length=10), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("custom_llm_provider", sa.String(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), server_default=sa.text("0"), nullable=False) for name in counters),
        sa.PrimaryKeyConstraint("end_user_id", "date", "model", "custom_llm_provider", name="pk_daily_customer_spend"),
    )
    op.create_index("ix_daily_customer_spend_date", "daily_customer_spend", ["date"])


def downgrade() -> None:
    op.drop_index("ix_daily_customer_spend_date", table_name="daily_customer_spend")
    op.drop_table("daily_customer_spend")
    op.drop_index("ix_spend_logs_start_time", table_name="spend_logs")
    op.drop_index("ix_spend_logs_end_user_start_time", table_name="spend_logs")
    op.drop_table("spend_logs")
    op.drop_index("ix_customers_budget_id", table_name="customers")
    op.drop_table("customers")
    op.drop_table("budgets")
