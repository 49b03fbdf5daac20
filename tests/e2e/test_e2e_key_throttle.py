"""Guessing keys is throttled per client address: LLM routes, the model list and the management API.

Regression for issue 10 finding 9: 300 wrong API keys in 10 s were all answered 401, and the right key then still
worked at once (a free oracle). Now an address that made `auth_failure_limit` failures is refused with 429 and
`retry-after`, the right key included, until its block ends; other addresses are never refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from haimaker.clock import FakeClock
from tests.e2e.e2e_stack import mock_deployment, proxy_config, sync_client
from tests.support.proxy import RunningProxy, running_proxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
CHAT = {"model": "gpt-3.5-turbo", "messages": MESSAGES}
LIMIT = 3
WINDOW_S = 60


def _config(**general: Any) -> dict[str, Any]:
    settings = {"auth_failure_limit": LIMIT, "auth_failure_window_s": WINDOW_S, **general}
    return proxy_config([mock_deployment("gpt-3.5-turbo")], general_settings=settings)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def proxy(tmp_path: Path, clock: FakeClock) -> Iterator[RunningProxy]:
    with running_proxy(tmp_path, _config(), clock=clock) as running:
        yield running


def _http(proxy: RunningProxy, local_address: str = "127.0.0.1") -> httpx.Client:
    # Linux routes all of 127.0.0.0/8 to loopback: a client bound to 127.0.0.2 is another address to the proxy.
    return httpx.Client(base_url=proxy.url, timeout=10, transport=httpx.HTTPTransport(local_address=local_address))


class _Response(Protocol):
    """An httpx response, or the one the openai SDK attaches to its errors (its own vendored httpx)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    def json(self) -> Any: ...


def _assert_throttled(response: _Response) -> None:
    assert response.status_code == 429, response.json()
    assert int(response.headers["retry-after"]) == WINDOW_S
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "429"
    assert "failed authentication attempts" in error["message"]


def test_wrong_llm_keys_throttle_the_address_and_then_refuse_the_right_key(
    proxy: RunningProxy, clock: FakeClock
) -> None:
    for _ in range(LIMIT):
        with sync_client(proxy, api_key="sk-guess") as client, pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)
    with sync_client(proxy) as client, pytest.raises(openai.RateLimitError) as raised:
        client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)
    _assert_throttled(raised.value.response)
    with _http(proxy) as http:
        _assert_throttled(http.get("/v1/models", headers=proxy.headers()))
        _assert_throttled(http.get("/customer/list", headers=proxy.headers()))
    clock.advance(WINDOW_S)
    with sync_client(proxy) as client:
        assert client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES).choices


def test_wrong_admin_keys_throttle_the_address(proxy: RunningProxy) -> None:
    with _http(proxy) as http:
        for _ in range(LIMIT):
            assert http.get("/customer/list", headers=proxy.headers("sk-guess")).status_code == 401
        _assert_throttled(http.get("/customer/list", headers=proxy.headers()))
        _assert_throttled(http.post("/v1/chat/completions", json=CHAT, headers=proxy.headers()))


def test_wrong_keys_on_the_model_list_throttle_the_address(proxy: RunningProxy) -> None:
    with _http(proxy) as http:
        for _ in range(LIMIT):
            assert http.get("/v1/models", headers=proxy.headers("sk-guess")).status_code == 401
        _assert_throttled(http.get("/v1/models/gpt-3.5-turbo", headers=proxy.headers()))


def test_missing_keys_are_not_guesses(proxy: RunningProxy) -> None:
    with _http(proxy) as http:
        for _ in range(LIMIT * 3):
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 401
        assert http.post("/v1/chat/completions", json=CHAT, headers=proxy.headers()).status_code == 200


def test_a_throttled_address_does_not_lock_out_another(proxy: RunningProxy) -> None:
    with _http(proxy) as attacker, _http(proxy, "127.0.0.2") as admin:
        for _ in range(LIMIT):
            attacker.get("/customer/list", headers=proxy.headers("sk-guess"))
        _assert_throttled(attacker.get("/customer/list", headers=proxy.headers()))
        assert admin.get("/customer/list", headers=proxy.headers()).status_code == 200
        assert admin.post("/v1/chat/completions", json=CHAT, headers=proxy.headers()).status_code == 200


def test_behind_a_trusted_proxy_the_forwarded_address_is_throttled(tmp_path: Path) -> None:
    config = _config(auth_trusted_proxies=["127.0.0.1"])
    with running_proxy(tmp_path, config) as proxy, _http(proxy) as http:
        guesser = {"x-forwarded-for": "203.0.113.7", **proxy.headers("sk-guess")}
        for _ in range(LIMIT):
            assert http.get("/customer/list", headers=guesser).status_code == 401
        _assert_throttled(http.get("/customer/list", headers={**guesser, **proxy.headers()}))
        other = {"x-forwarded-for": "203.0.113.8", **proxy.headers()}
        assert http.get("/customer/list", headers=other).status_code == 200


def test_forwarded_for_from_an_untrusted_peer_is_ignored(proxy: RunningProxy) -> None:
    with _http(proxy) as http:
        for i in range(LIMIT):
            # A guesser cannot dodge the throttle by naming a new address in each request.
            headers = {"x-forwarded-for": f"198.51.100.{i}", **proxy.headers("sk-guess")}
            assert http.get("/customer/list", headers=headers).status_code == 401
        _assert_throttled(http.get("/customer/list", headers=proxy.headers()))
