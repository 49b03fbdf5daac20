"""Customer region routing and proxy-only request fields, through the proxy with the `openai` SDK (issue 12).

Guards an EU-pinned customer's request reaching a US deployment (or one without a region), a region without
deployments answered other than with a clear 400 (or charged), the client not told where its call went, and fields
only the proxy reads (`metadata`, `litellm_metadata`, `tags`, `fallbacks`, `mock_response`, ...) sent upstream, where
OpenAI answers 400 to them, while OpenAI's own `user` and `safety_identifier` and unknown vendor fields still pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.e2e_stack import async_client, openai_deployment, proxy_config, sync_client
from tests.support.fakes import FakeOpenAI
from tests.support.proxy import RunningProxy, running_proxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]

# The fields `_upstream_body` removes that a LiteLLM client sends, each with a value it would send.
PROXY_ONLY: dict[str, Any] = {
    "litellm_metadata": {"tags": ["a"]},
    "litellm_trace_id": "trace-1",
    "litellm_session_id": "session-1",
    "tags": ["team-a"],
    "fallbacks": ["other"],
    "num_retries": 5,
    "mock_response": "mocked",
    "caching": False,
    "guardrails": ["pii"],
    "allowed_model_region": "us",
    "proxy_server_request": {"url": "forged"},
}


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI, openai_server_b: FakeOpenAI
) -> Iterator[RunningProxy]:
    # The first fake is the US (and unlabelled) upstream, the second the EU one.
    models = [
        openai_deployment("regional", openai_server, model_info={"id": "us-1"}, region_name="us"),
        openai_deployment("regional", openai_server_b, model_info={"id": "eu-1"}, region_name="eu"),
        openai_deployment("regional", openai_server, model_info={"id": "none-1"}),
        openai_deployment("us-only", openai_server, model_info={"id": "us-2"}, region_name="us"),
    ]
    with running_proxy(tmp_path_factory.mktemp("regions"), proxy_config(models)) as running:
        with running.client() as http:
            for user_id, region in (("eu-customer", "eu"), ("us-customer", "us")):
                created = http.post("/customer/new", json={"user_id": user_id, "allowed_model_region": region})
                assert created.status_code == 200, created.text
        yield running


@pytest.fixture
def http(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with proxy.client() as client:
        yield client


def test_an_eu_customer_is_served_only_by_eu_deployments_and_told_so(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        replies = [
            client.chat.completions.with_raw_response.create(model="regional", messages=MESSAGES, user="eu-customer")
            for _ in range(4)
        ]

    assert {r.headers["x-litellm-model-id"] for r in replies} == {"eu-1"}
    assert {r.headers["x-litellm-model-region"] for r in replies} == {"eu"}
    assert len(openai_upstream_b.requests) == 4
    assert openai_upstream.requests == []


async def test_an_eu_customer_named_in_metadata_streams_from_the_eu_deployment(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    async with async_client(proxy) as client:
        for _ in range(3):
            stream = await client.chat.completions.create(
                model="regional", messages=MESSAGES, stream=True, metadata={"user_id": "eu-customer"}
            )
            assert stream.response.headers["x-litellm-model-region"] == "eu"
            [chunk async for chunk in stream]

    assert len(openai_upstream_b.requests) == 3
    assert openai_upstream.requests == []
    assert all("metadata" not in r.json for r in openai_upstream_b.requests), "identity read it; upstream never saw it"


def test_a_customer_without_region_rotates_over_every_deployment(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        served = {
            client.chat.completions.with_raw_response.create(
                model="regional", messages=MESSAGES, user="anywhere"
            ).headers["x-litellm-model-id"]
            for _ in range(3)
        }

    assert served == {"us-1", "eu-1", "none-1"}


def test_a_model_without_a_deployment_in_the_region_is_a_400_and_costs_nothing(
    proxy: RunningProxy, http: httpx.Client, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    with sync_client(proxy) as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="us-only", messages=MESSAGES, user="eu-customer")

    error = raised.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "400"
    assert error["param"] == "model"
    assert "model group 'us-only'" in error["message"] and "region 'eu'" in error["message"]
    assert openai_upstream.requests == [] and openai_upstream_b.requests == []
    proxy.call(proxy.state.recorder.flush())
    info = http.get("/customer/info", params={"end_user_id": "eu-customer"}).json()
    assert info["spend"] == 0


def test_the_us_customer_reaches_its_only_model(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    with sync_client(proxy) as client:
        reply = client.chat.completions.with_raw_response.create(model="us-only", messages=MESSAGES, user="us-customer")

    assert reply.headers["x-litellm-model-region"] == "us"
    assert len(openai_upstream.requests) == 1


def test_proxy_only_fields_never_reach_the_upstream(
    proxy: RunningProxy, http: httpx.Client, openai_upstream: FakeOpenAI
) -> None:
    body = {
        "model": "us-only",
        "messages": MESSAGES,
        "user": "us-customer",
        "safety_identifier": "hashed-user",
        "metadata": {"note": "x"},
        "top_k": 3,  # a vendor field an OpenAI-compatible upstream may define: passed on
        **PROXY_ONLY,
    }
    response = http.post("/chat/completions", json=body)

    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] != "mocked", "mock_response is not honoured either"
    [sent] = openai_upstream.requests
    assert set(sent.json) == {"model", "messages", "user", "safety_identifier", "top_k"}
    assert sent.json["user"] == "us-customer"
    assert sent.json["safety_identifier"] == "hashed-user"


async def test_proxy_only_fields_are_stripped_from_streams_that_get_usage_added(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(
            model="us-only",
            messages=MESSAGES,
            stream=True,
            user="us-customer",
            extra_body={"litellm_metadata": {"user": "us-customer"}, "tags": ["t"]},
        )
        [chunk async for chunk in stream]

    [sent] = openai_upstream.requests
    assert sent.json["stream_options"] == {"include_usage": True}
    assert "litellm_metadata" not in sent.json and "tags" not in sent.json


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/completions", {"model": "us-only", "prompt": "hi"}),
        ("/embeddings", {"model": "us-only", "input": "hi"}),
    ],
)
def test_proxy_only_fields_are_stripped_on_every_llm_route(
    http: httpx.Client, openai_upstream: FakeOpenAI, path: str, body: dict[str, Any]
) -> None:
    sent_body = {**body, "user": "us-customer", "metadata": {"user_id": "us-customer"}, **PROXY_ONLY}
    response = http.post(path, json=sent_body)

    assert response.status_code == 200, response.text
    [sent] = openai_upstream.requests
    assert set(sent.json) == {*body, "user"}
