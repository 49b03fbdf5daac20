"""The usage export's tables as mapped classes (migration 0004): the outbox, each sink's cursor, its dead letters.

Kept beside `tables.py` rather than in it: only the usage export (`outbox_repo.py`) reads or writes them. Importing
`haimaker.storage` registers them on the shared `Base.metadata` (through `spend_repo` -> `outbox_repo`), so the
schema check that compares the migrations with the mapped tables sees them.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Identity, Index, Integer, String, Table, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from haimaker.storage.tables import Base, UTCDateTime, id_type


class UsageOutboxRow(Base):
    """One charged request waiting for (or already through) the export; read in (`txid`, `id`) order."""

    __tablename__ = "usage_outbox"
    __table_args__ = (
        UniqueConstraint("request_id", name="uq_usage_outbox_request_id"),
        Index("ix_usage_outbox_txid_id", "txid", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), Identity(always=False), primary_key=True
    )
    txid: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    request_id: Mapped[str] = mapped_column(id_type())
    end_user: Mapped[str] = mapped_column(id_type())
    model: Mapped[str] = mapped_column(String)
    custom_llm_provider: Mapped[str] = mapped_column(String)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)
    total_tokens: Mapped[int] = mapped_column(BigInteger)
    spend: Mapped[int] = mapped_column(BigInteger)
    start_time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class UsageExportCursorRow(Base):
    """Per sink: the last outbox row it acknowledged, its counts and its last error and success."""

    __tablename__ = "usage_export_cursors"

    sink: Mapped[str] = mapped_column(id_type(), primary_key=True)
    last_txid: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_id: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    exported: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    failed: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(String)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UsageExportFailureRow(Base):
    """An event a sink refused for good (a 4xx other than 429): kept, never retried, never blocking the others."""

    __tablename__ = "usage_export_failures"

    sink: Mapped[str] = mapped_column(id_type(), primary_key=True)
    request_id: Mapped[str] = mapped_column(id_type(), primary_key=True)
    status_code: Mapped[int] = mapped_column(Integer)
    error: Mapped[str] = mapped_column(String)
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime)


usage_outbox_table: Table = UsageOutboxRow.__table__  # type: ignore[assignment]
cursors_table: Table = UsageExportCursorRow.__table__  # type: ignore[assignment]
failures_table: Table = UsageExportFailureRow.__table__  # type: ignore[assignment]
