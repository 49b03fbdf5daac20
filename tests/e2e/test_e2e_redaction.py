"""Configured secrets never reach a client or a log line, whatever their shape (issue 10, finding 2).

Guards an upstream 400 whose `type`/`param`/`code` echo the key (only `message` was cleaned), stream error events
whose other fields passed through, and keys no `sk-` pattern recognises: an Azure key (32 hex characters) and an
arbitrary passphrase. Each deployment presents its own key to an upstream that echoes it back everywhere.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.e2e_stack import azure_deployment, openai_deployment, proxy_config, sse_payloads
from tests.support.fakes import BEHAVIOR_FIELD, FakeAzureOpenAI, FakeOpenAI
from tests.support.proxy import RunningProxy, running_proxy

SK_KEY = "sk-proj-Zq8cVb2nM4xL7kP1rT9wY3eU6iO0aS5d"
AZURE_KEY = "3f9a1c7e5b2d48f0a6c1e9b7d3f5a2c8"
PASSPHRASE = "correct-horse-battery-staple-42"
KEYS = {"sk": SK_KEY, "azure": AZURE_KEY, "passphrase": PASSPHRASE}
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def azure() -> Iterator[FakeAzureOpenAI]:
    with FakeAzureOpenAI(api_key=AZURE_KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def openai_any_key() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=None) as fake:  # accepts any key: each deployment presents its own
        yield fake


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, openai_any_key: FakeOpenAI, azure: FakeAzureOpenAI
) -> Iterator[RunningProxy]:
    config = proxy_config(
        [
            openai_deployment("sk", openai_any_key, upstream_model="gpt-4o", api_key=SK_KEY),
            azure_deployment("azure", azure, "prod"),
            openai_deployment("passphrase", openai_any_key, upstream_model="gpt-4o", api_key=PASSPHRASE),
        ],
        router_settings={"num_retries": 0},
    )
    with running_proxy(tmp_path_factory.mktemp("redaction"), config) as running:
        yield running


@pytest.fixture
def http(proxy: RunningProxy, openai_any_key: FakeOpenAI, azure: FakeAzureOpenAI) -> Iterator[httpx.Client]:
    openai_any_key.reset()
    azure.reset()
    with proxy.client() as client:
        yield client


def _echo(key: str) -> dict[str, Any]:
    return {"message": f"Incorrect API key provided: {key}.", "type": f"auth:{key}", "param": key, "code": key}


def _chat(http: httpx.Client, model: str, behavior: dict[str, Any], **extra: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, BEHAVIOR_FIELD: behavior, **extra}
    return http.post("/v1/chat/completions", json=body)


def _assert_clean(raw: bytes | str, key: str) -> None:
    text = raw if isinstance(raw, str) else raw.decode()
    assert key not in text
    assert key[:12] not in text and key[-12:] not in text, "not even a long piece of it"


@pytest.mark.parametrize("model", list(KEYS))
@pytest.mark.parametrize("status", [400, 401, 404, 422, 429, 500])
def test_an_upstream_error_echoing_the_key_in_every_field_reaches_the_client_without_it(
    http: httpx.Client, model: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    key = KEYS[model]
    with caplog.at_level(logging.DEBUG):
        response = _chat(http, model, {"status": status, "error_body": {"error": _echo(key)}})

    assert response.status_code == (status if status < 500 else 502)
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    _assert_clean(response.content, key)
    assert "[REDACTED]" in error["message"]
    _assert_clean(caplog.text, key)


@pytest.mark.parametrize("model", list(KEYS))
def test_a_stream_error_event_echoing_the_key_reaches_the_client_without_it(
    http: httpx.Client, model: str, caplog: pytest.LogCaptureFixture
) -> None:
    key = KEYS[model]
    with caplog.at_level(logging.DEBUG):
        response = _chat(http, model, {"stream_error": _echo(key)}, stream=True)

    assert response.status_code == 200
    _assert_clean(response.content, key)
    error = sse_payloads(response.content)[-1]["error"]
    assert error["param"] == "[REDACTED]"
    assert "[REDACTED]" in error["message"] and "[REDACTED]" in error["type"]
    _assert_clean(caplog.text, key)


@pytest.mark.parametrize("model", list(KEYS))
@pytest.mark.parametrize("stream", [False, True])
def test_a_key_the_upstream_puts_in_its_answer_is_scrubbed(http: httpx.Client, model: str, stream: bool) -> None:
    key = KEYS[model]
    response = _chat(http, model, {"reply": f"my key is {key} ok"}, stream=stream)

    assert response.status_code == 200
    _assert_clean(response.content, key)
    assert b"[REDACTED]" in response.content


def test_an_unreadable_error_body_quoting_the_key_reaches_the_client_without_it(http: httpx.Client) -> None:
    response = _chat(http, "passphrase", {"status": 400, "error_body": {"detail": f"<pre>{PASSPHRASE}</pre>"}})
    assert response.status_code == 400
    _assert_clean(response.content, PASSPHRASE)


def test_metrics_and_logs_never_carry_a_key(http: httpx.Client, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        for model, key in KEYS.items():
            _chat(http, model, {"status": 503, "error_body": {"error": _echo(key)}})
            logging.getLogger("haimaker.test").warning("a line quoting %s", key)
        metrics = http.get("/metrics")
    assert metrics.status_code == 200
    for key in KEYS.values():
        _assert_clean(caplog.text, key)
        _assert_clean(metrics.content, key)
