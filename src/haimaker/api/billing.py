"""`GET /billing/export/status` (admin only): each usage export sink's lag, counts, last error and last success."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from fastapi.responses import Response

from haimaker.api.deps import AppStateDep
from haimaker.api.responses import json_response
from haimaker.billing.status import export_status
from haimaker.storage.outbox_repo import OutboxRepository

router = APIRouter(tags=["Usage export"])


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@router.get("/billing/export/status")
async def get_export_status(state: AppStateDep) -> Response:
    """Per configured sink: events exported and refused, rows waiting and the oldest one's age, the last error."""
    exporter = state.usage_exporter
    if exporter is None:
        return json_response({"sinks": []})
    outbox = OutboxRepository(state.sink.sessions, clock=state.clock)
    statuses = await export_status(exporter, outbox, state.clock.now())
    return json_response(
        {
            "sinks": [
                {
                    "name": s.name,
                    "type": s.type,
                    "exported": s.exported,
                    "failed": s.failed,
                    "pending": s.pending,
                    "lag_seconds": round(s.lag_s, 3),
                    "consecutive_failures": s.consecutive_failures,
                    "last_error": s.last_error,
                    "last_error_at": _time(s.last_error_at),
                    "last_success_at": _time(s.last_success_at),
                }
                for s in statuses
            ]
        }
    )
