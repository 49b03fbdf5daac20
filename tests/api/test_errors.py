"""The error envelope's transport details: a 500 tells the client that the connection is closing (issue 10, finding 8).

After an unexpected error Starlette re-raises the exception to the server, which drops the keep-alive connection; a
response without `connection: close` let clients send their next request down that dying connection.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from haimaker.api.errors import install_error_handlers, internal_error, validation_error
from haimaker.api.llm import MAX_BODY_BYTES, send_error
from haimaker.errors import BadGatewayError, BadRequestError, PayloadTooLargeError, UnprocessableError


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    @app.get("/bad")
    async def bad() -> None:
        raise BadRequestError("bad input", param="x")

    return app


async def test_an_unexpected_error_answers_500_with_connection_close() -> None:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/boom")
    assert response.status_code == 500
    assert response.headers["connection"] == "close"
    assert response.json()["error"]["type"] == "internal_error"
    assert "a bug" not in response.text


async def test_a_client_error_keeps_the_connection_open() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/bad")
    assert response.status_code == 400
    assert "connection" not in response.headers


async def _sent_headers(error: Any) -> dict[bytes, bytes]:
    messages: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        messages.append(message)

    await send_error(send, error)
    return dict(messages[0]["headers"])


async def test_the_raw_llm_routes_send_connection_close_with_a_500_only() -> None:
    assert (await _sent_headers(internal_error()))[b"connection"] == b"close"
    assert b"connection" not in await _sent_headers(BadGatewayError("upstream down"))
    assert b"connection" not in await _sent_headers(BadRequestError("bad"))


def test_a_body_that_fails_validation_is_an_unprocessable_error() -> None:
    error = validation_error(RequestValidationError([{"loc": ("body", "max_budget"), "msg": "bad", "type": "x"}]))
    assert isinstance(error, UnprocessableError)
    assert (error.status_code, error.error_type, error.param) == (422, "invalid_request_error", "max_budget")


def test_an_llm_body_over_the_limit_is_refused_413_in_the_openai_shape(api: httpx.Client) -> None:
    chunk = b" " * (1 << 20)
    chunks = iter([b'{"model": "gpt-3.5-turbo", "messages": []', *([chunk] * (MAX_BODY_BYTES // len(chunk) + 1))])
    response = api.post("/v1/chat/completions", content=chunks)
    assert response.status_code == PayloadTooLargeError.status_code == 413
    error = response.json()["error"]
    assert (error["type"], error["code"], error["message"]) == (
        "invalid_request_error",
        "413",
        "Request body too large.",
    )
