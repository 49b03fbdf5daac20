"""FastAPI dependencies: the app state and the admin-key guard, as `Annotated` aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from haimaker.api.llm import headers_of
from haimaker.app_state import AppState


def get_state(request: Request) -> AppState:
    return request.app.state.haimaker  # type: ignore[no-any-return]


def _headers(request: Request) -> dict[str, str]:
    # Decoded as the raw ASGI routes do (UTF-8), so a key is the same key on every route.
    return headers_of(request.scope)


def require_admin(request: Request) -> None:
    get_state(request).auth.check_admin(_headers(request))


def require_llm_key(request: Request, state: AppState) -> None:
    state.auth.check_llm(_headers(request))


AppStateDep = Annotated[AppState, Depends(get_state)]
AdminDep = Annotated[None, Depends(require_admin)]
