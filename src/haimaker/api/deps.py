"""FastAPI dependencies: the app state and the admin-key guard, as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Annotated, Any

from fastapi import Depends, Request

from haimaker.api.llm import headers_of
from haimaker.app_state import AppState
from haimaker.errors import InvalidKeyError


def get_state(request: Request) -> AppState:
    return request.app.state.haimaker  # type: ignore[no-any-return]


def _headers(request: Request) -> dict[str, str]:
    # Decoded as the raw ASGI routes do (UTF-8), so a key is the same key on every route.
    return headers_of(request.scope)


def _check_key(request: Request, state: AppState, check: Callable[[Mapping[str, str]], Any]) -> None:
    """Run a key check behind the failed-key throttle: a throttled address gets 429 (right key or not), and a
    wrong key counts against its address."""
    throttle = state.auth_throttle
    address = throttle.address_of(request.scope)
    refusal = throttle.refusal(address)
    if refusal is not None:
        raise refusal
    try:
        check(_headers(request))
    except InvalidKeyError:
        throttle.record_failure(address)
        raise


def require_admin(request: Request) -> None:
    state = get_state(request)
    _check_key(request, state, state.auth.check_admin)


def require_llm_key(request: Request, state: AppState) -> None:
    _check_key(request, state, state.auth.check_llm)


AppStateDep = Annotated[AppState, Depends(get_state)]
AdminDep = Annotated[None, Depends(require_admin)]
