"""Upstream answers the proxy must not pass on or price as they are (issue 10, findings 1 and 7).

Guards absurd usage (2**62, 1e308, negative, fractional, strings, cache > prompt) answered 200 and priced at
trillions of dollars, which then stopped the spend writer; a 200 whose body is not a JSON object reaching the client
as 200 and charged; and an answer without `usage` charged zero output tokens although text was delivered. Each
failure must be a 502 in our envelope, the reservation released (a customer with room for one reservation at a
time is still admitted afterwards), and a failure row in the spend logs instead of a charge.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.e2e_stack import openai_deployment, proxy_config, sse_payloads
from tests.support.fakes import BEHAVIOR_FIELD, FakeOpenAI
from tests.support.proxy import RunningProxy, running_proxy

MESSAGES = [{"role": "user", "content": "hi"}]
# $1 per million tokens each way; max_tokens 1000 reserves ~$0.001, so a budget of $0.0015 holds one at a time.
PRICE: dict[str, Any] = {"input_cost_per_token": 1e-06, "output_cost_per_token": 1e-06}
BUDGET_USD = 0.0015


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI) -> Iterator[RunningProxy]:
    config = proxy_config([openai_deployment("gpt-4o", openai_server, **PRICE)], router_settings={"num_retries": 0})
    with running_proxy(tmp_path_factory.mktemp("answers"), config) as running:
        yield running


@pytest.fixture
def http(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> Iterator[httpx.Client]:
    with proxy.client() as client:
        yield client


def _customer(http: httpx.Client, name: str) -> str:
    created = http.post("/customer/new", json={"user_id": name, "max_budget": BUDGET_USD})
    assert created.status_code == 200, created.text
    return name


def _chat(http: httpx.Client, customer: str, behavior: dict[str, Any], **extra: Any) -> httpx.Response:
    body = {"model": "gpt-4o", "messages": MESSAGES, "user": customer, "max_tokens": 1000, BEHAVIOR_FIELD: behavior}
    return http.post("/v1/chat/completions", json={**body, **extra})


def _logs(http: httpx.Client, proxy: RunningProxy, customer: str) -> list[dict[str, Any]]:
    proxy.call(proxy.state.recorder.flush())
    response = http.get("/spend/logs", params={"end_user": customer})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def _assert_bad_gateway(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 502, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "502"
    assert "x-litellm-response-cost" not in response.headers
    return error


ABSURD_USAGE = [
    {"prompt_tokens": 2**62, "completion_tokens": 1, "total_tokens": 2**62 + 1},
    {"prompt_tokens": 1e30, "completion_tokens": 1},
    {"prompt_tokens": 1e308, "completion_tokens": 1e308},
    {"prompt_tokens": -10, "completion_tokens": 5},
    {"prompt_tokens": 10, "completion_tokens": 2.5},
    {"prompt_tokens": "10", "completion_tokens": 5},
    {"prompt_tokens": True, "completion_tokens": 5},
    {"prompt_tokens": 5, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 50}},
    {"prompt_tokens": 200_000_000, "completion_tokens": 5},
]


@pytest.mark.parametrize("usage", ABSURD_USAGE, ids=repr)
def test_absurd_usage_is_a_502_and_charges_nothing(
    http: httpx.Client, proxy: RunningProxy, usage: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    customer = _customer(http, f"absurd-{abs(hash(repr(usage)))}")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            error = _assert_bad_gateway(_chat(http, customer, {"usage": usage}))
            assert "usage" in error["message"]
    assert any("usage" in record.getMessage() for record in caplog.records), "the fault is logged"

    # Every reservation was released: the budget still has room for the one reservation it can hold.
    assert _chat(http, customer, {}).status_code == 200
    rows = _logs(http, proxy, customer)
    assert sorted(row["status"] for row in rows) == ["failure", "failure", "failure", "success"]
    assert all(row["spend"] < 0.001 for row in rows)


def test_absurd_usage_in_a_stream_ends_it_with_an_error_event_and_charges_the_text_only(
    http: httpx.Client, proxy: RunningProxy
) -> None:
    customer = _customer(http, "absurd-stream")
    body = {"stream": True, "stream_options": {"include_usage": True}}
    response = _chat(http, customer, {"usage": {"prompt_tokens": 1e308, "completion_tokens": 3}}, **body)

    assert response.status_code == 200  # the stream had started
    payloads = sse_payloads(response.content)
    assert "[DONE]" not in payloads
    assert payloads[-1]["error"]["code"] == "502"
    assert all("usage" not in p or p["usage"] is None for p in payloads[:-1]), (
        "the absurd usage never reaches the client"
    )
    rows = _logs(http, proxy, customer)
    assert len(rows) == 1
    # Charged for the text it delivered, counted by our tokenizer: a few tokens, never 1e308.
    assert 0 < rows[0]["completion_tokens"] < 50
    assert rows[0]["spend"] < 0.001
    assert _chat(http, customer, {}).status_code == 200, "the reservation was settled, not leaked"


@pytest.mark.parametrize("raw", ["<html>502 Bad Gateway</html>", "", "[1, 2, 3]", '"just a string"', "null", "{"])
def test_a_200_that_is_not_a_json_object_is_a_502_and_charges_nothing(
    http: httpx.Client, proxy: RunningProxy, raw: str
) -> None:
    customer = _customer(http, f"unreadable-{abs(hash(raw))}")
    for _ in range(3):
        error = _assert_bad_gateway(_chat(http, customer, {"raw_body": raw}))
        assert "upstream" in error["message"].lower()
    assert _chat(http, customer, {}).status_code == 200
    rows = _logs(http, proxy, customer)
    assert sorted(row["status"] for row in rows) == ["failure", "failure", "failure", "success"]


def test_an_answer_without_usage_is_charged_for_the_text_it_carries(http: httpx.Client, proxy: RunningProxy) -> None:
    customer = _customer(http, "no-usage")
    reply = "one two three four five six seven eight nine ten eleven twelve"
    response = _chat(http, customer, {"omit_usage": True, "reply": reply})

    assert response.status_code == 200, response.text
    assert "usage" not in response.json()
    rows = _logs(http, proxy, customer)
    assert len(rows) == 1
    assert rows[0]["completion_tokens"] >= 12, "the delivered text is counted, not charged as zero output tokens"
    assert rows[0]["prompt_tokens"] > 0
    assert float(response.headers["x-litellm-response-cost"]) > 0
