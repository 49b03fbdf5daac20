"""Every failure a client can cause or meet, with its exact status and the OpenAI error envelope.

Guards error-detail leakage (the upstream key echoed by an upstream error reaching the client or the logs),
tracebacks and 500s on bad input, and upstream failures mapped to the wrong status (a 5xx passed on as if
the client were wrong, a hanging upstream holding the client forever).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any, Protocol

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.e2e_stack import (
    UPSTREAM_KEY,
    async_client,
    azure_deployment,
    mock_deployment,
    openai_deployment,
    proxy_config,
    sync_client,
)
from tests.support.fakes import BEHAVIOR_FIELD, Behavior, FakeAzureOpenAI, FakeOpenAI, azure_error_body
from tests.support.proxy import RunningProxy, running_proxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
ENVELOPE_KEYS = {"message", "type", "param", "code"}


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI, azure_server: FakeAzureOpenAI
) -> Iterator[RunningProxy]:
    config = proxy_config(
        [
            mock_deployment("gpt-3.5-turbo"),
            openai_deployment("gpt-4o", openai_server),
            # The upstream rejects this key and (worst case) echoes it whole in its 401 message.
            openai_deployment("wrong-key", openai_server, upstream_model="gpt-4o", api_key=UPSTREAM_KEY),
            openai_deployment("slow", openai_server, upstream_model="gpt-4o", timeout=1),
            azure_deployment("azure-chat", azure_server, "prod"),
        ],
        # Retries are the routing tests' business; here one failure is one upstream call.
        router_settings={"num_retries": 0},
    )
    with running_proxy(tmp_path_factory.mktemp("errors"), config) as running:
        yield running


def _post(proxy: RunningProxy, path: str, content: bytes) -> httpx.Response:
    headers = {**proxy.headers(), "content-type": "application/json"}
    with httpx.Client(timeout=10) as http:
        return http.post(proxy.url + path, content=content, headers=headers)


class _Response(Protocol):
    """An httpx response, or the SDK's (it vendors httpx as httpx2)."""

    @property
    def status_code(self) -> int: ...

    def json(self) -> Any: ...


def _error_of(response: _Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == ENVELOPE_KEYS, error
    assert error["code"] == str(response.status_code)
    return error


# ---- bad requests --------------------------------------------------------------------------------------


def test_malformed_json_is_400_with_envelope(proxy: RunningProxy) -> None:
    response = _post(proxy, "/v1/chat/completions", b'{"model": "gpt-3.5-turbo", "messages": [}')

    assert response.status_code == 400
    error = _error_of(response)
    assert error["type"] == "invalid_request_error"
    assert "JSON" in error["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"messages": MESSAGES}, "model"),
        ("/v1/chat/completions", {"model": "gpt-3.5-turbo"}, "messages"),
        ("/v1/completions", {"model": "gpt-3.5-turbo"}, "prompt"),
        ("/v1/embeddings", {"model": "gpt-3.5-turbo"}, "input"),
    ],
)
def test_missing_required_field_is_400_naming_it(
    proxy: RunningProxy, path: str, body: dict[str, Any], param: str
) -> None:
    response = _post(proxy, path, httpx.Request("POST", "/", json=body).content)

    assert response.status_code == 400
    error = _error_of(response)
    assert error["param"] == param
    assert param in error["message"]


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"model": 123}, "model"),
        ({"model": ""}, "model"),
        ({"messages": "hi"}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": ["hi"]}, "messages[0]"),
        ({"messages": [{"content": "no role"}]}, "messages[0]"),
        ({"stream": "yes"}, "stream"),
        ({"max_tokens": "10"}, "max_tokens"),
        ({"max_tokens": -1}, "max_tokens"),
        ({"n": True}, "n"),
    ],
)
def test_wrong_types_are_400_naming_the_field(proxy: RunningProxy, changes: dict[str, Any], param: str) -> None:
    body = {"model": "gpt-3.5-turbo", "messages": MESSAGES, **changes}
    response = _post(proxy, "/v1/chat/completions", httpx.Request("POST", "/", json=body).content)

    assert response.status_code == 400
    assert _error_of(response)["param"] == param


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"[]",
        b'"text"',
        b"42",
        b'{"model": null, "messages": null}',
        b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": {"weird": true}}]}',
        b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}',
        b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": null}], "user": {"id": 1}}',
        b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}], "metadata": "not-a-dict"}',
        b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}], "stream": true, '
        b'"stream_options": "nope"}',
        b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}], "stream": true, '
        b'"stream_options": null}',
        b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}], "max_tokens": 1e400}',
        b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}], "tools": "none"}',
        b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}], "user": 7}',
        b'{"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "x"}], "user": "' + b"u" * 300 + b'"}',
        b"\xff\xfe garbage",
    ],
)
def test_garbage_bodies_never_get_a_500(proxy: RunningProxy, raw: bytes) -> None:
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        response = _post(proxy, path, raw)
        assert response.status_code < 500, (path, response.text)
        if response.status_code >= 400:
            _error_of(response)
            assert "Traceback" not in response.text


def test_unknown_model_is_400_naming_it_and_the_available_ones(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-nonexistent", messages=MESSAGES)

    error = _error_of(raised.value.response)
    assert "gpt-nonexistent" in error["message"]
    for name in ("gpt-3.5-turbo", "gpt-4o", "azure-chat"):
        assert name in error["message"]
    assert error["param"] == "model"


async def test_unknown_model_on_stream_and_embeddings_is_400(proxy: RunningProxy) -> None:
    async with async_client(proxy) as client:
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="nope", messages=MESSAGES, stream=True)
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model="nope", input="x")


# ---- upstream 4xx ----------------------------------------------------------------------------------------


def test_upstream_key_never_reaches_client_or_logs(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with sync_client(proxy) as client, pytest.raises(openai.AuthenticationError) as raised:
        client.chat.completions.create(model="wrong-key", messages=MESSAGES)

    # The fake did echo the key: the proxy is what stands between it and the client.
    received = openai_upstream.last_request
    assert received.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    response = raised.value.response
    assert response.status_code == 401
    error = _error_of(response)
    assert "Incorrect API key provided" in error["message"]
    assert UPSTREAM_KEY not in response.text
    assert UPSTREAM_KEY[:12] not in response.text
    for header_value in response.headers.values():
        assert UPSTREAM_KEY not in header_value
    proxy_records = [r for r in caplog.records if r.name.startswith("haimaker")]
    assert any("Incorrect API key provided" in r.getMessage() for r in proxy_records), "the failure is logged"
    assert UPSTREAM_KEY not in caplog.text
    for record in caplog.records:
        assert UPSTREAM_KEY not in record.getMessage()
        assert UPSTREAM_KEY not in repr(record.args)


async def test_upstream_key_never_reaches_a_streaming_client(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with async_client(proxy) as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            await client.chat.completions.create(model="wrong-key", messages=MESSAGES, stream=True)

    assert UPSTREAM_KEY not in raised.value.response.text
    assert UPSTREAM_KEY not in caplog.text


@pytest.mark.parametrize("status", [400, 403, 404, 409, 422])
def test_upstream_4xx_is_passed_on_with_its_status_and_message(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, status: int
) -> None:
    openai_upstream.script(Behavior.failing(status, f"upstream says no ({status})"))
    with sync_client(proxy) as client, pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert raised.value.status_code == status
    error = _error_of(raised.value.response)
    assert error["message"] == f"upstream says no ({status})"
    assert len(openai_upstream.requests) == 1, "a client error is not retried"


def test_secret_shaped_text_in_upstream_messages_is_redacted(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    leaked = "sk-proj-AbCdEf0123456789xyz"
    openai_upstream.script(Behavior.failing(400, f"bad request for key {leaked}; header Bearer {leaked}"))
    with sync_client(proxy) as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert "AbCdEf0123456789" not in raised.value.response.text
    assert "bad request for key" in _error_of(raised.value.response)["message"]


def test_upstream_429_keeps_its_status_and_retry_after(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.script(Behavior.failing(429, headers={"retry-after": "7"}))
    with sync_client(proxy) as client, pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert raised.value.response.headers["retry-after"] == "7"
    assert _error_of(raised.value.response)["message"].startswith("Rate limit reached")


def test_azure_error_body_without_type_is_passed_on(proxy: RunningProxy, azure_upstream: FakeAzureOpenAI) -> None:
    body = azure_error_body("content_filter", "The response was filtered due to the prompt triggering a policy.")
    azure_upstream.script(Behavior(status=400, error_body=body))
    with sync_client(proxy) as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="azure-chat", messages=MESSAGES)

    error = _error_of(raised.value.response)
    assert error["message"] == "The response was filtered due to the prompt triggering a policy."


# ---- upstream 5xx and timeouts ----------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_upstream_5xx_becomes_502(proxy: RunningProxy, openai_upstream: FakeOpenAI, status: int) -> None:
    openai_upstream.script(Behavior.failing(status))
    with sync_client(proxy) as client, pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert raised.value.status_code == 502
    error = _error_of(raised.value.response)
    assert error["type"] == "api_error"
    assert f"HTTP {status}" in error["message"]


def test_upstream_5xx_with_html_body_becomes_502(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.script(Behavior(status=503, error_body={"html": "<html>nginx</html>"}))
    with sync_client(proxy) as client, pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert raised.value.status_code == 502


async def test_hanging_upstream_times_out_as_504_and_is_released(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    openai_upstream.behavior = Behavior.hanging()
    async with async_client(proxy) as client:
        started = time.perf_counter()
        with pytest.raises(openai.APIStatusError) as raised:
            await client.chat.completions.create(model="slow", messages=MESSAGES)
        elapsed_s = time.perf_counter() - started

    assert raised.value.status_code == 504
    assert _error_of(raised.value.response)["type"] == "timeout"
    assert 0.9 <= elapsed_s < 3.0
    await openai_upstream.wait_disconnected(timeout_s=2.0)


def test_upstream_that_stalls_mid_stream_ends_the_stream_with_an_error(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    stalling = {BEHAVIOR_FIELD: {"chunk_delay_s": 3.0}}
    with sync_client(proxy) as client:
        stream = client.chat.completions.create(model="slow", messages=MESSAGES, stream=True, extra_body=stalling)
        with pytest.raises(openai.APIError) as raised:
            list(stream)

    assert raised.value.body is not None
    openai_upstream.wait_disconnected_sync(timeout_s=2.0)


def test_proxy_keeps_serving_after_every_kind_of_failure(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.script(Behavior.failing(500), Behavior.failing(400), Behavior.dying_after(1))
    with sync_client(proxy) as client:
        for _ in range(2):
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.choices[0].message.content
