"""What `GET /billing/export/status` reports per sink: how far behind it is, and its last error and success."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from haimaker.billing.exporter import UsageExporter
from haimaker.storage.outbox_repo import OutboxRepository


@dataclass(frozen=True, slots=True)
class SinkStatus:
    name: str
    type: str
    exported: int  # events the sink acknowledged (a resend after a crash may count twice here, never at the sink)
    failed: int  # events it refused for good (dead letters, `usage_export_failures`)
    pending: int  # rows after its cursor
    lag_s: float  # age of the oldest pending row; 0 when none waits
    consecutive_failures: int  # failed attempts since its last success (this instance's view)
    last_error: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None


async def export_status(exporter: UsageExporter, outbox: OutboxRepository, now: datetime) -> list[SinkStatus]:
    """The status of every configured sink, in configuration order."""
    sinks = exporter.sink_settings
    progress = {p.sink: p for p in await outbox.progress([sink.name for sink in sinks])}
    statuses = []
    for sink in sinks:
        p = progress[sink.name]
        lag_s = max(0.0, (now - p.oldest_pending_at).total_seconds()) if p.oldest_pending_at is not None else 0.0
        statuses.append(
            SinkStatus(
                name=sink.name,
                type=sink.type,
                exported=p.exported,
                failed=p.failed,
                pending=p.pending,
                lag_s=lag_s,
                consecutive_failures=exporter.failures.get(sink.name, 0),
                last_error=p.last_error,
                last_error_at=p.last_error_at,
                last_success_at=p.last_success_at,
            )
        )
    return statuses
