"""The relational schema: one mapped class per table, and the mapping between rows and domain records.

Tables: `budgets`, `customers` (FK `budget_id` → budgets, ON DELETE SET NULL), `spend_logs` (one row per request,
keyed by `request_id`), `daily_customer_spend` (rollup keyed by end user, UTC date, model and provider),
`haimaker_meta` (the store's identity), `dead_letters` (items the recorder could not write) and `virtual_keys`
(proxy keys, by SHA-256 hex; their spend is charged in the same transaction as the spend logs).

Invariants:
- Alembic migrations (`storage/migrations/`) create and change the schema; these classes describe the same schema for
  queries and for the migration drift test, and are never used with `create_all` outside tests of migrations.
- Money columns are BigInteger nano-dollars; token counters are BigInteger.
- Datetime columns are `UTCDateTime`: naive datetimes are refused on the way in, and every value comes back
  timezone-aware UTC on both engines (SQLite stores naive UTC text; PostgreSQL stores `timestamptz`).
- Identifier columns compare byte-wise on both engines (PostgreSQL columns use the "C" collation, SQLite's default
  is BINARY), so `ORDER BY user_id` agrees with Python's `sorted()` everywhere.
- Repositories turn rows into records with the `to_record()` methods here; ORM rows never leave `storage/`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from haimaker.storage.records import Budget, Customer, DailySpend, SpendLog, VirtualKey

# Deterministic constraint names on both engines, so later migrations can name what they alter.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def id_type() -> TypeEngine[str]:
    """An identifier column: a string compared byte-wise (PostgreSQL "C" collation; SQLite BINARY by default)."""
    return String().with_variant(String(collation="C"), "postgresql")


def json_type() -> TypeEngine[Any]:
    """A JSON document column (JSONB on PostgreSQL)."""
    return JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on both engines; naive datetimes are refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: haimaker stores timezone-aware UTC datetimes only")
        value = value.astimezone(UTC)
        # SQLite has no timezone type: store naive UTC text, which also sorts and compares correctly.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base holding the schema's `MetaData`."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class BudgetRow(Base):
    """A budget (pricing tier): limits and a reset period shared by many customers."""

    __tablename__ = "budgets"

    budget_id: Mapped[str] = mapped_column(id_type(), primary_key=True)
    max_budget: Mapped[int | None] = mapped_column(BigInteger)
    soft_budget: Mapped[int | None] = mapped_column(BigInteger)
    max_parallel_requests: Mapped[int | None] = mapped_column(Integer)
    tpm_limit: Mapped[int | None] = mapped_column(BigInteger)
    rpm_limit: Mapped[int | None] = mapped_column(BigInteger)
    tpd_limit: Mapped[int | None] = mapped_column(BigInteger)
    model_max_budget: Mapped[dict[str, Any] | None] = mapped_column(json_type())
    budget_duration: Mapped[str | None] = mapped_column(String)
    budget_reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String)

    def to_record(self) -> Budget:
        return Budget(
            budget_id=self.budget_id,
            max_budget=self.max_budget,
            soft_budget=self.soft_budget,
            max_parallel_requests=self.max_parallel_requests,
            tpm_limit=self.tpm_limit,
            rpm_limit=self.rpm_limit,
            tpd_limit=self.tpd_limit,
            model_max_budget=self.model_max_budget,
            budget_duration=self.budget_duration,
            budget_reset_at=self.budget_reset_at,
            created_at=self.created_at,
            created_by=self.created_by,
            updated_at=self.updated_at,
            updated_by=self.updated_by,
        )


class CustomerRow(Base):
    """A customer (end user): spend since the last reset, access rules, and an optional budget."""

    __tablename__ = "customers"
    __table_args__ = (Index("ix_customers_budget_id", "budget_id"),)

    user_id: Mapped[str] = mapped_column(id_type(), primary_key=True)
    alias: Mapped[str | None] = mapped_column(String)
    spend: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    blocked: Mapped[bool] = mapped_column(Boolean, server_default=false())
    allowed_model_region: Mapped[str | None] = mapped_column(String)
    default_model: Mapped[str | None] = mapped_column(String)
    models: Mapped[list[str]] = mapped_column(json_type(), server_default=text("'[]'"))
    budget_id: Mapped[str | None] = mapped_column(id_type(), ForeignKey("budgets.budget_id", ondelete="SET NULL"))
    spend_reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def to_record(self) -> Customer:
        return Customer(
            user_id=self.user_id,
            alias=self.alias,
            spend=self.spend,
            blocked=self.blocked,
            allowed_model_region=self.allowed_model_region,
            default_model=self.default_model,
            models=tuple(self.models),
            budget_id=self.budget_id,
            spend_reset_at=self.spend_reset_at,
            created_at=self.created_at,
        )


class SpendLogRow(Base):
    """One charged (or failed) request. `end_user` is "" when the request named no customer."""

    __tablename__ = "spend_logs"
    __table_args__ = (
        Index("ix_spend_logs_end_user_start_time", "end_user", "start_time"),
        Index("ix_spend_logs_start_time", "start_time"),
        Index("ix_spend_logs_api_key_start_time", "api_key", "start_time"),
    )

    request_id: Mapped[str] = mapped_column(id_type(), primary_key=True)
    end_user: Mapped[str] = mapped_column(id_type())
    model: Mapped[str] = mapped_column(String)
    model_id: Mapped[str] = mapped_column(String)
    model_group: Mapped[str] = mapped_column(String)
    custom_llm_provider: Mapped[str] = mapped_column(String)
    call_type: Mapped[str] = mapped_column(String)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    total_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_read_input_tokens: Mapped[int] = mapped_column(BigInteger)
    cache_creation_input_tokens: Mapped[int] = mapped_column(BigInteger)
    spend: Mapped[int] = mapped_column(BigInteger)
    start_time: Mapped[datetime] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String)
    api_key: Mapped[str] = mapped_column(String)
    # `metadata` is reserved on declarative classes, hence the attribute name.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", json_type())

    def to_record(self) -> SpendLog:
        return SpendLog(
            request_id=self.request_id,
            end_user=self.end_user,
            model=self.model,
            model_id=self.model_id,
            model_group=self.model_group,
            custom_llm_provider=self.custom_llm_provider,
            call_type=self.call_type,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            total_tokens=self.total_tokens,
            spend=self.spend,
            start_time=self.start_time,
            end_time=self.end_time,
            status=self.status,
            cache_read_input_tokens=self.cache_read_input_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens,
            api_key=self.api_key,
            metadata=self.metadata_,
        )


class DailyCustomerSpendRow(Base):
    """Daily rollup of spend logs per (end user, UTC date, model, provider); `end_user_id` "" = no customer."""

    __tablename__ = "daily_customer_spend"
    __table_args__ = (Index("ix_daily_customer_spend_date", "date"),)

    COUNTERS: ClassVar[tuple[str, ...]] = (
        "prompt_tokens",
        "completion_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "spend",
        "api_requests",
        "successful_requests",
        "failed_requests",
    )

    end_user_id: Mapped[str] = mapped_column(id_type(), primary_key=True)
    date: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD, UTC
    model: Mapped[str] = mapped_column(String, primary_key=True)
    custom_llm_provider: Mapped[str] = mapped_column(String, primary_key=True)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    completion_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cache_read_input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    cache_creation_input_tokens: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    spend: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    api_requests: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    successful_requests: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    failed_requests: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))

    def to_record(self) -> DailySpend:
        return DailySpend(
            end_user_id=self.end_user_id,
            date=self.date,
            model=self.model,
            custom_llm_provider=self.custom_llm_provider,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cache_read_input_tokens=self.cache_read_input_tokens,
            cache_creation_input_tokens=self.cache_creation_input_tokens,
            spend=self.spend,
            api_requests=self.api_requests,
            successful_requests=self.successful_requests,
            failed_requests=self.failed_requests,
        )


class VirtualKeyRow(Base):
    """A virtual key (LiteLLM's `LiteLLM_VerificationToken`): the key's SHA-256 hex, never the key (migration 0003)."""

    __tablename__ = "virtual_keys"
    __table_args__ = (Index("ix_virtual_keys_key_alias", "key_alias"),)

    token: Mapped[str] = mapped_column(id_type(), primary_key=True)
    key_name: Mapped[str] = mapped_column(String)
    key_alias: Mapped[str | None] = mapped_column(id_type())
    expires: Mapped[datetime | None] = mapped_column(UTCDateTime)
    models: Mapped[list[str]] = mapped_column(json_type(), server_default=text("'[]'"))
    spend: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    max_budget: Mapped[int | None] = mapped_column(BigInteger)
    soft_budget: Mapped[int | None] = mapped_column(BigInteger)
    budget_duration: Mapped[str | None] = mapped_column(String)
    budget_reset_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    rpm_limit: Mapped[int | None] = mapped_column(BigInteger)
    tpm_limit: Mapped[int | None] = mapped_column(BigInteger)
    max_parallel_requests: Mapped[int | None] = mapped_column(Integer)
    model_max_budget: Mapped[dict[str, Any] | None] = mapped_column(json_type())
    model_rpm_limit: Mapped[dict[str, int] | None] = mapped_column(json_type())
    model_tpm_limit: Mapped[dict[str, int] | None] = mapped_column(json_type())
    # `metadata` is reserved on declarative classes, hence the attribute name.
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", json_type(), server_default=text("'{}'"))
    blocked: Mapped[bool] = mapped_column(Boolean, server_default=false())
    key_type: Mapped[str] = mapped_column(String, server_default=text("'default'"))
    allowed_routes: Mapped[list[str]] = mapped_column(json_type(), server_default=text("'[]'"))
    end_user_budget_id: Mapped[str | None] = mapped_column(id_type())
    customer_id: Mapped[str | None] = mapped_column(id_type())
    user_id: Mapped[str | None] = mapped_column(String)
    team_id: Mapped[str | None] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str] = mapped_column(String)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_by: Mapped[str] = mapped_column(String)

    def to_record(self) -> VirtualKey:
        return VirtualKey(
            token=self.token,
            key_name=self.key_name,
            key_alias=self.key_alias,
            expires=self.expires,
            models=tuple(self.models or ()),
            spend=self.spend,
            max_budget=self.max_budget,
            soft_budget=self.soft_budget,
            budget_duration=self.budget_duration,
            budget_reset_at=self.budget_reset_at,
            rpm_limit=self.rpm_limit,
            tpm_limit=self.tpm_limit,
            max_parallel_requests=self.max_parallel_requests,
            model_max_budget=self.model_max_budget,
            model_rpm_limit=self.model_rpm_limit,
            model_tpm_limit=self.model_tpm_limit,
            metadata=dict(self.metadata_ or {}),
            blocked=self.blocked,
            key_type=self.key_type,
            allowed_routes=tuple(self.allowed_routes or ()),
            end_user_budget_id=self.end_user_budget_id,
            customer_id=self.customer_id,
            user_id=self.user_id,
            team_id=self.team_id,
            created_at=self.created_at,
            created_by=self.created_by,
            updated_at=self.updated_at,
            updated_by=self.updated_by,
        )


class MetaRow(Base):
    """A fact about the store itself; `store_id` is written once, when the store is created (migration 0002)."""

    __tablename__ = "haimaker_meta"

    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(String)


class DeadLetterRow(Base):
    """A charge or reset the recorder could not write: the item as ASCII JSON text, and why (sanitised)."""

    __tablename__ = "dead_letters"
    __table_args__ = (Index("ix_dead_letters_created_at", "created_at"),)

    id: Mapped[str] = mapped_column(String, primary_key=True)  # hash of kind and payload: filed once
    kind: Mapped[str] = mapped_column(String)
    error: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# Core views of the same tables, for the batched statements (executemany, multi-row upserts).
budgets_table = cast(Table, BudgetRow.__table__)
customers_table = cast(Table, CustomerRow.__table__)
spend_logs_table = cast(Table, SpendLogRow.__table__)
daily_customer_spend_table = cast(Table, DailyCustomerSpendRow.__table__)
virtual_keys_table = cast(Table, VirtualKeyRow.__table__)


def budget_values(budget: Budget) -> dict[str, Any]:
    """Column values of a budget record (datetimes as given; the repository fills missing timestamps)."""
    return {
        "budget_id": budget.budget_id,
        "max_budget": budget.max_budget,
        "soft_budget": budget.soft_budget,
        "max_parallel_requests": budget.max_parallel_requests,
        "tpm_limit": budget.tpm_limit,
        "rpm_limit": budget.rpm_limit,
        "tpd_limit": budget.tpd_limit,
        "model_max_budget": budget.model_max_budget,
        "budget_duration": budget.budget_duration,
        "budget_reset_at": budget.budget_reset_at,
        "created_at": budget.created_at,
        "created_by": budget.created_by,
        "updated_at": budget.updated_at,
        "updated_by": budget.updated_by,
    }


def customer_values(customer: Customer) -> dict[str, Any]:
    """Column values of a customer record."""
    return {
        "user_id": customer.user_id,
        "alias": customer.alias,
        "spend": customer.spend,
        "blocked": customer.blocked,
        "allowed_model_region": customer.allowed_model_region,
        "default_model": customer.default_model,
        "models": list(customer.models),
        "budget_id": customer.budget_id,
        "spend_reset_at": customer.spend_reset_at,
        "created_at": customer.created_at,
    }


def spend_log_values(log: SpendLog) -> dict[str, Any]:
    """Column values of a spend log record, keyed by column name (`metadata`, not `metadata_`)."""
    return {
        "request_id": log.request_id,
        "end_user": log.end_user,
        "model": log.model,
        "model_id": log.model_id,
        "model_group": log.model_group,
        "custom_llm_provider": log.custom_llm_provider,
        "call_type": log.call_type,
        "prompt_tokens": log.prompt_tokens,
        "completion_tokens": log.completion_tokens,
        "total_tokens": log.total_tokens,
        "cache_read_input_tokens": log.cache_read_input_tokens,
        "cache_creation_input_tokens": log.cache_creation_input_tokens,
        "spend": log.spend,
        "start_time": log.start_time,
        "end_time": log.end_time,
        "status": log.status,
        "api_key": log.api_key,
        "metadata": log.metadata,
    }


def virtual_key_values(key: VirtualKey) -> dict[str, Any]:
    """Column values of a virtual key record, keyed by column name (`metadata`, not `metadata_`)."""
    return {
        "token": key.token,
        "key_name": key.key_name,
        "key_alias": key.key_alias,
        "expires": key.expires,
        "models": list(key.models),
        "spend": key.spend,
        "max_budget": key.max_budget,
        "soft_budget": key.soft_budget,
        "budget_duration": key.budget_duration,
        "budget_reset_at": key.budget_reset_at,
        "rpm_limit": key.rpm_limit,
        "tpm_limit": key.tpm_limit,
        "max_parallel_requests": key.max_parallel_requests,
        "model_max_budget": key.model_max_budget,
        "model_rpm_limit": key.model_rpm_limit,
        "model_tpm_limit": key.model_tpm_limit,
        "metadata": key.metadata,
        "blocked": key.blocked,
        "key_type": key.key_type,
        "allowed_routes": list(key.allowed_routes),
        "end_user_budget_id": key.end_user_budget_id,
        "customer_id": key.customer_id,
        "user_id": key.user_id,
        "team_id": key.team_id,
        "created_at": key.created_at,
        "created_by": key.created_by,
        "updated_at": key.updated_at,
        "updated_by": key.updated_by,
    }
