"""What operators and clients can observe: the x-litellm-* response headers, health checks, Prometheus metrics.

Guards missing or malformed headers that LiteLLM clients read (call id, model id, cost, durations), an
overhead figure that swallows the upstream time, health checks that need a key, and metric labels that
carry customer ids (unbounded cardinality, and a privacy leak).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.e2e_stack import (
    async_client,
    metric_samples,
    mock_deployment,
    openai_deployment,
    proxy_config,
    sync_client,
)
from tests.support.fakes import BEHAVIOR_FIELD, Behavior, FakeOpenAI
from tests.support.proxy import RunningProxy, running_proxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
INPUT_COST = 0.001
OUTPUT_COST = 0.002
SECRET_CUSTOMER = "customer-secret-8d1f"


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI) -> Iterator[RunningProxy]:
    config = proxy_config(
        [
            openai_deployment(
                "priced",
                openai_server,
                upstream_model="gpt-4o",
                input_cost_per_token=INPUT_COST,
                output_cost_per_token=OUTPUT_COST,
                model_info={"id": "priced-deployment"},
            ),
            mock_deployment("gpt-3.5-turbo"),
            mock_deployment("unpriced-mock"),
            mock_deployment("streamed-only"),
        ]
    )
    with running_proxy(tmp_path_factory.mktemp("observability"), config) as running:
        yield running


# ---- response headers --------------------------------------------------------------------------------------


def test_response_headers_carry_call_id_model_id_durations_and_cost(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    upstream_delay_s = 0.2
    with sync_client(proxy) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="priced", messages=MESSAGES, extra_body={BEHAVIOR_FIELD: {"delay_s": upstream_delay_s}}
        )
    completion = raw.parse()
    headers = raw.headers

    assert uuid.UUID(headers["x-litellm-call-id"])
    assert headers["x-litellm-model-id"] == "priced-deployment"
    duration_ms = float(headers["x-litellm-response-duration-ms"])
    overhead_ms = float(headers["x-litellm-overhead-duration-ms"])
    assert duration_ms >= upstream_delay_s * 1000
    assert 0 <= overhead_ms < duration_ms
    assert overhead_ms < duration_ms - upstream_delay_s * 1000 + 1, "overhead must exclude the upstream's time"
    assert completion.usage is not None
    expected_cost = completion.usage.prompt_tokens * INPUT_COST + completion.usage.completion_tokens * OUTPUT_COST
    assert float(headers["x-litellm-response-cost"]) == pytest.approx(expected_cost, rel=1e-9)


async def test_call_ids_are_unique_per_request(proxy: RunningProxy) -> None:
    async with async_client(proxy) as client:
        ids = set()
        for _ in range(3):
            raw = await client.chat.completions.with_raw_response.create(model="gpt-3.5-turbo", messages=MESSAGES)
            ids.add(raw.headers["x-litellm-call-id"])
    assert len(ids) == 3


def test_unpriced_model_reports_zero_cost(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client:
        raw = client.embeddings.with_raw_response.create(model="unpriced-mock", input="x")
    assert float(raw.headers["x-litellm-response-cost"]) == 0.0
    assert float(raw.headers["x-litellm-overhead-duration-ms"]) >= 0


async def test_stream_response_headers_carry_call_id_model_id_and_durations(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    async with async_client(proxy) as client:
        raw = await client.chat.completions.with_raw_response.create(model="priced", messages=MESSAGES, stream=True)
        stream = raw.parse()  # the legacy raw response parses synchronously, also on the async client
        [chunk async for chunk in stream]
    headers = raw.headers

    assert uuid.UUID(headers["x-litellm-call-id"])
    assert headers["x-litellm-model-id"] == "priced-deployment"
    duration_ms = float(headers["x-litellm-response-duration-ms"])
    assert 0 <= float(headers["x-litellm-overhead-duration-ms"]) <= duration_ms


# ---- health ------------------------------------------------------------------------------------------------


def test_liveliness_answers_without_a_key(proxy: RunningProxy) -> None:
    with httpx.Client(timeout=10) as http:
        response = http.get(proxy.url + "/health/liveliness")
    assert response.status_code == 200
    assert response.json() == "I'm alive!"


def test_readiness_reports_a_connected_database(proxy: RunningProxy) -> None:
    with httpx.Client(timeout=10) as http:
        response = http.get(proxy.url + "/health/readiness")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert body["db"] == "connected"


# ---- metrics -------------------------------------------------------------------------------------------------


def test_metrics_count_requests_by_route_model_status_without_customer_ids(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        client.chat.completions.create(
            model="priced", messages=MESSAGES, user=SECRET_CUSTOMER, extra_headers={"x-litellm-customer-id": "c-2"}
        )
        client.embeddings.create(model="gpt-3.5-turbo", input="x", user=SECRET_CUSTOMER)
    with httpx.Client(timeout=10) as http:
        unauthorized = http.post(proxy.url + "/v1/chat/completions", json={"model": "priced", "messages": MESSAGES})
        response = http.get(proxy.url + "/metrics")

    assert unauthorized.status_code == 401
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = metric_samples(response.text, "haimaker_requests_total")
    assert all(set(labels) == {"route", "model", "status"} for labels, _ in samples)
    counted = {(labels["route"], labels["model"], labels["status"]): value for labels, value in samples}
    assert counted[("chat/completions", "priced", "200")] >= 1
    assert counted[("embeddings", "gpt-3.5-turbo", "200")] >= 1
    assert any(status == "401" for (_, _, status) in counted)
    assert SECRET_CUSTOMER not in response.text
    assert "c-2" not in response.text
    assert proxy.master_key not in response.text


def test_metrics_label_unknown_models_as_other(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client:
        try:
            client.chat.completions.create(model="attacker-chosen-name-123", messages=MESSAGES)
        except Exception:
            pass
    with httpx.Client(timeout=10) as http:
        text = http.get(proxy.url + "/metrics").text
    assert "attacker-chosen-name-123" not in text


def test_streamed_requests_are_counted(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client:
        list(client.chat.completions.create(model="streamed-only", messages=MESSAGES, stream=True))
    with httpx.Client(timeout=10) as http:
        text = http.get(proxy.url + "/metrics").text

    samples = metric_samples(text, "haimaker_requests_total")
    assert [s for s in samples if s[0]["model"] == "streamed-only"] == [
        ({"route": "chat/completions", "model": "streamed-only", "status": "200"}, 1.0)
    ]


def test_failed_requests_are_counted_under_their_model(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    openai_upstream.script(*[Behavior.failing(503)] * 3)  # every attempt (default retries) fails
    with sync_client(proxy) as client:
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="priced", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="priced", messages=[])
    with httpx.Client(timeout=10) as http:
        text = http.get(proxy.url + "/metrics").text

    counted = {(s["model"], s["status"]) for s, _ in metric_samples(text, "haimaker_requests_total")}
    assert ("priced", "502") in counted
    assert ("other", "400") in counted  # refused before its model was read: no name to trust yet
