"""Health checks for load balancers and orchestrators, and the model list."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from haimaker import __version__
from haimaker.api.deps import AppStateDep, require_llm_key
from haimaker.api.responses import json_response
from haimaker.errors import NotFoundError

router = APIRouter()


@router.get("/health/liveliness", include_in_schema=True)
@router.get("/health/liveness", include_in_schema=False)
async def liveliness() -> PlainTextResponse:
    return PlainTextResponse('"I\'m alive!"', media_type="application/json")


@router.get("/health/readiness")
async def readiness(state: AppStateDep) -> Response:
    db_ok = await state.store_is_reachable()
    body = {
        "status": "healthy" if db_ok else "unhealthy",
        "db": "connected" if db_ok else "disconnected",
        "cache": "redis" if state.redis_url else None,
        "litellm_version": __version__,
        "haimaker_version": __version__,
        "spend_writes_pending": state.recorder.pending,
    }
    if state.cluster is not None:
        # Informational: a Redis outage is handled by fail-open/fail-closed, so it never fails readiness.
        body.update(state.cluster.status())
    return json_response(body, status_code=200 if db_ok else 503)


@router.get("/models")
@router.get("/v1/models")
async def list_models(request: Request, state: AppStateDep) -> Response:
    require_llm_key(request, state)
    created = int(state.started_at)
    data = [
        {"id": name, "object": "model", "created": created, "owned_by": "haimaker"} for name in state.router.model_names
    ]
    return json_response({"object": "list", "data": data})


@router.get("/models/{model_id:path}")
@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request, state: AppStateDep) -> Response:
    require_llm_key(request, state)
    if model_id not in state.router.model_names:
        raise NotFoundError(f"The model '{model_id}' does not exist", param="model")
    return json_response({"id": model_id, "object": "model", "created": int(state.started_at), "owned_by": "haimaker"})


@router.get("/metrics", include_in_schema=False)
async def metrics(state: AppStateDep) -> Response:
    state.metrics.spend_pending.set(state.recorder.pending)
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
