"""Load balancing and retries over the deployments of one model name.

Guards a group that always hits one deployment, a failing deployment surfacing to the client while a
healthy one stands by, and retries happening when the config says not to.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.e2e_stack import async_client, closed_port, openai_deployment, proxy_config, sync_client
from tests.support.fakes import Behavior, FakeOpenAI
from tests.support.proxy import RunningProxy, running_proxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]


def _routing_models(first: FakeOpenAI, second: FakeOpenAI) -> list[dict[str, object]]:
    refused = openai_deployment("refused-first", first)
    refused["litellm_params"]["api_base"] = f"http://127.0.0.1:{closed_port()}/v1"
    return [
        openai_deployment("balanced", first, upstream_model="gpt-4o", model_info={"id": "balanced-a"}),
        openai_deployment("balanced", second, upstream_model="gpt-4o", model_info={"id": "balanced-b"}),
        # The first fake answers 503 to this upstream model (set per test); the second one is healthy.
        openai_deployment("failover", first, upstream_model="flaky", model_info={"id": "failover-a"}),
        openai_deployment("failover", second, upstream_model="flaky", model_info={"id": "failover-b"}),
        refused,
        openai_deployment("refused-first", second, upstream_model="gpt-4o"),
    ]


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI, openai_server_b: FakeOpenAI
) -> Iterator[RunningProxy]:
    config = proxy_config(_routing_models(openai_server, openai_server_b))
    with running_proxy(tmp_path_factory.mktemp("routing"), config) as running:
        yield running


@pytest.fixture(scope="module")
def no_retry_proxy(
    tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI, openai_server_b: FakeOpenAI
) -> Iterator[RunningProxy]:
    config = proxy_config(_routing_models(openai_server, openai_server_b), router_settings={"num_retries": 0})
    with running_proxy(tmp_path_factory.mktemp("no-retry"), config) as running:
        yield running


def test_requests_alternate_between_deployments_of_a_model(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        served_by = [
            client.chat.completions.with_raw_response.create(model="balanced", messages=MESSAGES).headers[
                "x-litellm-model-id"
            ]
            for _ in range(6)
        ]

    assert set(served_by) == {"balanced-a", "balanced-b"}
    assert all(a != b for a, b in itertools.pairwise(served_by)), served_by
    assert len(openai_upstream.requests) == len(openai_upstream_b.requests) == 3


async def test_async_requests_alternate_between_deployments(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    async with async_client(proxy) as client:
        for _ in range(4):
            stream = await client.chat.completions.create(model="balanced", messages=MESSAGES, stream=True)
            [chunk async for chunk in stream]

    assert len(openai_upstream.requests) == len(openai_upstream_b.requests) == 2


def test_failing_deployment_is_retried_on_the_other(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    openai_upstream.set_model_behavior("flaky", Behavior.failing(503))
    with sync_client(proxy) as client:
        replies = [
            client.chat.completions.with_raw_response.create(model="failover", messages=MESSAGES) for _ in range(4)
        ]

    assert [r.status_code for r in replies] == [200] * 4
    assert {r.headers["x-litellm-model-id"] for r in replies} == {"failover-b"}
    assert len(openai_upstream.requests) == 2, "each request that started on the failing deployment tried it once"
    assert len(openai_upstream_b.requests) == 4


async def test_failing_deployment_is_retried_for_streams(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    openai_upstream.set_model_behavior("flaky", Behavior.failing(500))
    async with async_client(proxy) as client:
        for _ in range(2):
            stream = await client.chat.completions.create(model="failover", messages=MESSAGES, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "Hello! This is the fake upstream speaking."

    assert len(openai_upstream_b.requests) == 2


def test_connection_refused_deployment_is_retried_on_the_other(
    proxy: RunningProxy, openai_upstream_b: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        replies = [client.chat.completions.create(model="refused-first", messages=MESSAGES) for _ in range(4)]

    assert all(r.choices[0].message.content for r in replies)
    assert len(openai_upstream_b.requests) == 4


def test_every_deployment_failing_is_502_after_bounded_attempts(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    openai_upstream.set_model_behavior("flaky", Behavior.failing(503))
    openai_upstream_b.set_model_behavior("flaky", Behavior.failing(503))
    with sync_client(proxy) as client, pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="failover", messages=MESSAGES)

    assert raised.value.status_code == 502
    # The default num_retries is 2: three attempts over the group, then the error.
    assert len(openai_upstream.requests) + len(openai_upstream_b.requests) == 3


def test_client_errors_are_not_retried(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    openai_upstream.set_model_behavior("flaky", Behavior.failing(400))
    openai_upstream_b.set_model_behavior("flaky", Behavior.failing(400))
    with sync_client(proxy) as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="failover", messages=MESSAGES)

    assert len(openai_upstream.requests) + len(openai_upstream_b.requests) == 1


def test_num_retries_zero_means_no_retry(
    no_retry_proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    openai_upstream.set_model_behavior("flaky", Behavior.failing(503))
    statuses: list[int] = []
    with sync_client(no_retry_proxy) as client:
        for _ in range(2):
            try:
                client.chat.completions.create(model="failover", messages=MESSAGES)
                statuses.append(200)
            except openai.APIStatusError as exc:
                statuses.append(exc.status_code)

    assert sorted(statuses) == [200, 502], "the request that started on the failing deployment was not retried"
    assert len(openai_upstream.requests) == 1
    assert len(openai_upstream_b.requests) == 1


def test_num_retries_zero_surfaces_connection_refused_as_502(
    no_retry_proxy: RunningProxy, openai_upstream_b: FakeOpenAI
) -> None:
    statuses: list[int] = []
    with sync_client(no_retry_proxy) as client:
        for _ in range(2):
            try:
                client.chat.completions.create(model="refused-first", messages=MESSAGES)
                statuses.append(200)
            except openai.APIStatusError as exc:
                statuses.append(exc.status_code)

    assert sorted(statuses) == [200, 502]
    assert len(openai_upstream_b.requests) == 1
