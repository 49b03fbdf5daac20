"""Health checks for load balancers and orchestrators, and the model list."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from haimaker import __version__
from haimaker.api.deps import AppStateDep, require_llm_key
from haimaker.api.responses import json_response
from haimaker.errors import NotFoundError
from haimaker.limits.engine import key_allows_model

if TYPE_CHECKING:
    from haimaker.app_state import AppState
    from haimaker.storage.store_health import StoreStatus

router = APIRouter()


@router.get("/health/liveliness", include_in_schema=True)
@router.get("/health/liveness", include_in_schema=False)
async def liveliness() -> PlainTextResponse:
    return PlainTextResponse('"I\'m alive!"', media_type="application/json")


@router.get("/health/readiness")
async def readiness(state: AppStateDep) -> Response:
    """Ready to serve, and is every charge reaching the store? See `readiness_of` for the rule."""
    store = await state.store_monitor.check()
    status, reasons = readiness_of(state, store)
    recorder = state.recorder
    body = {
        "status": status,
        "db": {"ok": "connected", "lost": "lost"}.get(store.state, "disconnected"),
        "cache": "redis" if state.redis_url else None,
        "litellm_version": __version__,
        "haimaker_version": __version__,
        "spend_writes_pending": recorder.pending,
        "spend_writes_failing_for_s": round(recorder.failing_for_s, 1),
        "spend_dead_letters": state.dead_letter_count(),
        "reasons": reasons,
    }
    if state.cluster is not None:
        # Informational: a Redis outage is handled by fail-open/fail-closed, so it never fails readiness.
        body.update(state.cluster.status())
    return json_response(body, status_code=503 if status == "unhealthy" else 200)


# A writer failing this long, or this far behind, makes readiness "degraded" (charges wait, none is lost yet).
WRITER_FAILING_DEGRADED_S: Final = 10.0
PENDING_DEGRADED: Final = 10_000


def readiness_of(state: AppState, store: StoreStatus) -> tuple[str, list[str]]:
    """The readiness rule: (status, reasons).

    - "unhealthy" (503): the store is unreachable, or lost (SQLite file missing, replaced or read-only; store
      emptied or another one): take this instance out of rotation.
    - "degraded" (200, still serving): dead letters exist (table, file or log), the spend writer has been failing
      for `WRITER_FAILING_DEGRADED_S` or more, or `PENDING_DEGRADED` or more charges are pending.
    - "healthy" otherwise.
    """
    if store.state != "ok":
        return "unhealthy", [f"store {store.state}: {store.reason}"]
    recorder = state.recorder
    reasons = []
    dead = state.dead_letter_count()
    if dead:
        reasons.append(f"{dead} spend item(s) could not be written: see GET /spend/dead_letters")
    if recorder.failing_for_s >= WRITER_FAILING_DEGRADED_S:
        reasons.append(f"spend writes failing for {recorder.failing_for_s:.0f}s: {recorder.last_error}")
    if recorder.pending >= PENDING_DEGRADED:
        reasons.append(f"{recorder.pending} spend writes pending")
    return ("degraded" if reasons else "healthy"), reasons


@router.get("/models")
@router.get("/v1/models")
async def list_models(request: Request, state: AppStateDep) -> Response:
    caller = await require_llm_key(request, state)
    created = int(state.started_at)
    # A virtual key sees the models it may call (LiteLLM's /models for a key with `models`).
    names = [n for n in state.router.model_names if caller.key is None or key_allows_model(caller.key, n)]
    data = [{"id": name, "object": "model", "created": created, "owned_by": "haimaker"} for name in names]
    return json_response({"object": "list", "data": data})


@router.get("/models/{model_id:path}")
@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request, state: AppStateDep) -> Response:
    caller = await require_llm_key(request, state)
    if model_id not in state.router.model_names or (
        caller.key is not None and not key_allows_model(caller.key, model_id)
    ):
        raise NotFoundError(f"The model '{model_id}' does not exist", param="model")
    return json_response({"id": model_id, "object": "model", "created": int(state.started_at), "owned_by": "haimaker"})


@router.get("/metrics", include_in_schema=False)
async def metrics(state: AppStateDep) -> Response:
    state.metrics.spend_pending.set(state.recorder.pending)
    state.metrics.journal_only.set(state.recorder.journal_only)
    state.metrics.journal_bytes.set(state.recorder.journal_bytes)
    # The store monitor's last verdict (it checks every second): a scrape does no I/O.
    monitor = state.store_monitor
    box = state.recorder.dead_letters
    state.metrics.observe_ledger(
        store_state=monitor.status.state,
        dead_letters_table=monitor.status.dead_letters,
        dead_letters_file=box.in_file + box.in_log_only,
        failing_for_s=state.recorder.failing_for_s,
    )
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
