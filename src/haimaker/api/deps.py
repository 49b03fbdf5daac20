"""FastAPI dependencies, as `Annotated` aliases: the app state, the service layer, and the admin-key guard.

The one place routes get the running app from (the management API, health and the admin UI alike).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from haimaker.api.llm import headers_of
from haimaker.app_state import AppState
from haimaker.errors import InvalidKeyError, ServiceUnavailableError
from haimaker.identity import Caller
from haimaker.services.container import Services


def get_state(request: Request) -> AppState:
    """The running app's state (built by the lifespan; a 503, not a 500, for a request served before it ran)."""
    return state_of(request.app)


def state_of(app: FastAPI) -> AppState:
    """`get_state` for code outside a route: the raw-ASGI LLM and admin-key paths of `app.py`."""
    state: AppState | None = getattr(app.state, "haimaker", None)
    if state is None:
        raise ServiceUnavailableError("The proxy is still starting.")
    return state


def get_services(request: Request) -> Services:
    """The service layer the management API and the admin UI share."""
    return get_state(request).services


def _headers(request: Request) -> dict[str, str]:
    # Decoded as the raw ASGI routes do (UTF-8), so a key is the same key on every route.
    return headers_of(request.scope)


async def _check_key(
    request: Request, state: AppState, check: Callable[[Mapping[str, str]], Awaitable[Caller]]
) -> Caller:
    """Run a key check behind the failed-key throttle: a throttled address gets 429 (right key or not), and a
    wrong key counts against its address."""
    throttle = state.auth_throttle
    address = throttle.address_of(request.scope)
    refusal = throttle.refusal(address)
    if refusal is not None:
        raise refusal
    try:
        return await check(_headers(request))
    except InvalidKeyError:
        throttle.record_failure(address)
        raise


async def require_admin(request: Request) -> Caller:
    """The caller of a management route: the master key or a `management` key; a `read_only` key on reads."""
    state = get_state(request)
    return await _check_key(
        request, state, lambda headers: state.auth.check_admin(headers, request.method, request.url.path)
    )


async def require_llm_key(request: Request, state: AppState) -> Caller:
    return await _check_key(request, state, lambda headers: state.auth.check_llm(headers, request.url.path))


AppStateDep = Annotated[AppState, Depends(get_state)]
ServicesDep = Annotated[Services, Depends(get_services)]
AdminDep = Annotated[Caller, Depends(require_admin)]
