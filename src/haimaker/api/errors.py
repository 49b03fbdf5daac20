"""Renders `ProxyError`s as the OpenAI error envelope, for raw ASGI handlers and FastAPI alike."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from haimaker.errors import ProxyError, UnprocessableError

logger = logging.getLogger("haimaker.api")


def error_body(error: ProxyError) -> bytes:
    return orjson.dumps(error.envelope())


def error_headers(error: ProxyError) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", b"application/json")]
    headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in _headers_of(error).items())
    return headers


def _headers_of(error: ProxyError) -> dict[str, str]:
    if error.status_code != 500:
        return error.headers
    # After an unexpected error the server drops the connection (Starlette re-raises the exception to it): say so,
    # or a keep-alive client sends its next request down a connection that is about to close.
    return {**error.headers, "connection": "close"}


def internal_error() -> ProxyError:
    # Never a traceback or an exception text: they can carry secrets.
    return ProxyError("Internal server error. The failure was logged.", error_type="internal_error")


def error_response(error: ProxyError) -> Response:
    return Response(
        content=error_body(error),
        status_code=error.status_code,
        media_type="application/json",
        headers=_headers_of(error),
    )


def validation_error(exc: RequestValidationError) -> UnprocessableError:
    """422 in our envelope, `param` naming the first invalid field."""
    errors: list[Any] = list(exc.errors())
    first = errors[0] if errors else {}
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query")]
    param = ".".join(loc) or None
    msg = str(first.get("msg", "Invalid request"))
    if first.get("type") == "json_invalid":
        msg, param = "Invalid JSON in request body.", None
    elif first.get("type") == "missing":
        msg = f"Missing required field: {param}"
    elif param:
        msg = f"{param}: {msg}"
    return UnprocessableError(msg, param=param)


def install_error_handlers(app: FastAPI) -> None:
    async def on_proxy_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProxyError)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error_type = {404: "not_found", 405: "invalid_request_error", 401: "auth_error"}.get(
            exc.status_code, "invalid_request_error"
        )
        return error_response(ProxyError(str(exc.detail), status_code=exc.status_code, error_type=error_type))

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(internal_error())

    app.add_exception_handler(ProxyError, on_proxy_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
