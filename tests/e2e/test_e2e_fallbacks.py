"""Retries, fallbacks, cooldowns and deployment rpm through the proxy, driven by the `openai` SDK.

Guards a request charged twice or at the failed deployment's price after a fallback, a fallback taken before the
group's retries, response headers that hide what the call took (`x-litellm-attempted-retries` / `-fallbacks`,
the answering model id and group), a deployment answering 429 still tried while another is healthy, and a deployment
over its rpm still served.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from haimaker.money import nanos_to_usd, usd_to_nanos
from tests.e2e.e2e_stack import async_client, openai_deployment, proxy_config, sync_client
from tests.support.fakes import Behavior, FakeOpenAI
from tests.support.proxy import RunningProxy, running_proxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
PRIMARY_PRICE = {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}
BACKUP_PRICE = {"input_cost_per_token": 0.000003, "output_cost_per_token": 0.000005}


def _models(a: FakeOpenAI, b: FakeOpenAI) -> list[dict[str, Any]]:
    def on(fake: FakeOpenAI, group: str, upstream: str, model_id: str, **params: Any) -> dict[str, Any]:
        return openai_deployment(group, fake, upstream_model=upstream, model_info={"id": model_id}, **params)

    return [
        on(a, "primary", "p1", "primary-1", **PRIMARY_PRICE),
        on(a, "primary", "p2", "primary-2", **PRIMARY_PRICE),
        on(b, "backup", "backup", "backup-1", **BACKUP_PRICE),
        on(a, "limited", "lim-a", "limited-a", rpm=2),
        on(b, "limited", "lim-b", "limited-b", rpm=1000),
        on(a, "tiny", "tiny", "tiny-1", rpm=1),
        on(a, "thrifty", "thrifty", "thrifty-1", tpm=1),
        on(a, "cool", "cool-a", "cool-a"),
        on(b, "cool", "cool-b", "cool-b"),
        on(a, "slow", "slow", "slow-1", timeout=0.3),
    ]


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI, openai_server_b: FakeOpenAI
) -> Iterator[RunningProxy]:
    config = proxy_config(
        _models(openai_server, openai_server_b),
        router_settings={"num_retries": 2, "fallbacks": [{"primary": ["backup"]}, {"slow": ["backup"]}]},
    )
    with running_proxy(tmp_path_factory.mktemp("fallbacks"), config) as running:
        yield running


def _spend_rows(proxy: RunningProxy, request_id: str) -> list[dict[str, Any]]:
    proxy.call(proxy.state.recorder.flush())
    response = httpx.get(
        f"{proxy.url}/spend/logs", params={"request_id": request_id}, headers=proxy.headers(), timeout=30
    )
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def _backup_cost_nanos(prompt_tokens: int, completion_tokens: int) -> int:
    usd = (
        Decimal(str(BACKUP_PRICE["input_cost_per_token"])) * prompt_tokens
        + Decimal(str(BACKUP_PRICE["output_cost_per_token"])) * completion_tokens
    )
    return usd_to_nanos(usd)


def test_retries_then_fallback_charge_once_at_the_answering_deployments_price(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    openai_upstream.set_model_behavior("p1", Behavior.failing(500))
    openai_upstream.set_model_behavior("p2", Behavior.failing(503))
    with sync_client(proxy) as client:
        raw = client.chat.completions.with_raw_response.create(model="primary", messages=MESSAGES, user="fb-alice")
    completion = raw.parse()

    assert raw.headers["x-litellm-model-id"] == "backup-1"
    assert raw.headers["x-litellm-model-group"] == "backup"
    assert raw.headers["x-litellm-attempted-retries"] == "2"
    assert raw.headers["x-litellm-attempted-fallbacks"] == "1"
    assert len(openai_upstream.requests) == 3, "the group's retries came before the fallback"
    assert len(openai_upstream_b.requests) == 1
    assert completion.usage is not None
    cost = _backup_cost_nanos(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    assert cost > 0
    assert raw.headers["x-litellm-response-cost"] == repr(nanos_to_usd(cost))

    rows = _spend_rows(proxy, raw.headers["x-litellm-call-id"])
    assert len(rows) == 1, rows
    assert rows[0]["status"] == "success"
    assert rows[0]["model_id"] == "backup-1"
    assert usd_to_nanos(Decimal(str(rows[0]["spend"]))) == cost
    info = httpx.get(
        f"{proxy.url}/customer/info", params={"end_user_id": "fb-alice"}, headers=proxy.headers(), timeout=30
    )
    assert usd_to_nanos(Decimal(str(info.json()["spend"]))) == cost


async def test_a_stream_falls_back_before_its_first_byte(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    openai_upstream.set_model_behavior("p1", Behavior.failing(429, headers={"retry-after": "0"}))
    openai_upstream.set_model_behavior("p2", Behavior.failing(429, headers={"retry-after": "0"}))
    async with async_client(proxy) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="primary", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in raw.parse()]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! This is the fake upstream speaking."
    assert raw.headers["x-litellm-model-id"] == "backup-1"
    assert raw.headers["x-litellm-attempted-fallbacks"] == "1"
    usage = chunks[-1].usage
    assert usage is not None
    rows = _spend_rows(proxy, raw.headers["x-litellm-call-id"])
    assert [row["model_id"] for row in rows] == ["backup-1"]
    assert usd_to_nanos(Decimal(str(rows[0]["spend"]))) == _backup_cost_nanos(
        usage.prompt_tokens, usage.completion_tokens
    )


def test_a_timeout_is_retried_then_falls_back(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    openai_upstream.set_model_behavior("slow", Behavior.hanging())
    with sync_client(proxy) as client:
        raw = client.chat.completions.with_raw_response.create(model="slow", messages=MESSAGES)

    assert raw.status_code == 200
    assert raw.headers["x-litellm-model-id"] == "backup-1"
    assert raw.headers["x-litellm-attempted-retries"] == "2"
    assert len(openai_upstream.requests) == 3


def test_a_deployment_answering_429_cools_down_and_is_skipped(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    openai_upstream.set_model_behavior("cool-a", Behavior.failing(429))
    with sync_client(proxy) as client:
        served = [
            client.chat.completions.with_raw_response.create(model="cool", messages=MESSAGES).headers[
                "x-litellm-model-id"
            ]
            for _ in range(6)
        ]

    assert served == ["cool-b"] * 6
    assert len(openai_upstream.requests) == 1, "tried once, then skipped while cooling down"


def test_a_deployment_over_its_rpm_is_skipped(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, openai_upstream_b: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        served = [
            client.chat.completions.with_raw_response.create(model="limited", messages=MESSAGES).headers[
                "x-litellm-model-id"
            ]
            for _ in range(12)
        ]

    assert served.count("limited-a") <= 2
    assert len(openai_upstream.requests) <= 2


def test_every_deployment_over_its_rpm_is_a_429_no_deployments_available(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client:
        client.chat.completions.create(model="tiny", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="tiny", messages=MESSAGES)

    assert raised.value.status_code == 429
    body = raised.value.response.json()["error"]
    assert body["message"].startswith("No deployments available for selected model, Try again in ")
    assert "Passed model=tiny." in body["message"]
    assert int(raised.value.response.headers["retry-after"]) >= 1


def test_a_deployment_over_its_tpm_is_not_served_again_this_minute(proxy: RunningProxy) -> None:
    """The tokens a deployment served count against its own tpm (settled answers feed the router)."""
    with sync_client(proxy) as client:
        client.chat.completions.create(model="thrifty", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as raised:
            client.chat.completions.create(model="thrifty", messages=MESSAGES)

    assert raised.value.response.json()["error"]["message"].startswith("No deployments available")
