"""`bedrock/` deployments end to end: the official `openai` SDK against a proxy whose models are served by a strict
fake Bedrock runtime that recomputes every SigV4 signature.

What a client relies on: chat answers (JSON and streamed, tool calls included) in OpenAI's shape; Converse usage
(cache reads and writes included) priced at Claude's table prices to the nano-dollar in the response-cost header, the
customer's spend and the spend logs; credentials from the config or from the process's AWS environment; Bedrock's
errors mapped to statuses the SDK understands; what Converse cannot do refused with a 400 before any call.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam

from haimaker.config.loader import ConfigError, load_config
from haimaker.money import usd_to_nanos
from tests.e2e.e2e_stack import customer_spend_nanos, new_customer, proxy_config, spend_logs, sync_client
from tests.support.fakes import Behavior
from tests.support.fakes.bedrock import (
    ACCESS_KEY_ID,
    REGION,
    SECRET_ACCESS_KEY,
    SESSION_TOKEN,
    FakeBedrock,
    isolate_aws_environment,
)
from tests.support.proxy import RunningProxy, running_proxy

MODEL_ID = "anthropic.claude-3-5-sonnet-20241022-v2:0"
# claude-3-5-sonnet in accounting/prices.json (Claude costs the same on Bedrock), per token in nano-dollars.
INPUT, OUTPUT, CACHE_READ, CACHE_WRITE = 3_000, 15_000, 300, 3_750
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAIAAAUAAen6L8YAAAAASUVORK5CYII="
)


def bedrock(model_name: str, fake: FakeBedrock, *, model_id: str = MODEL_ID, **params: Any) -> dict[str, Any]:
    litellm_params = {"model": f"bedrock/{model_id}", "api_base": fake.url, "aws_region_name": REGION, **params}
    return {"model_name": model_name, "litellm_params": litellm_params}


STATIC_KEYS = {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}


@pytest.fixture(scope="module")
def bedrock_server() -> Iterator[FakeBedrock]:
    with FakeBedrock() as fake:
        yield fake


@pytest.fixture
def upstream(bedrock_server: FakeBedrock) -> FakeBedrock:
    bedrock_server.reset()
    bedrock_server.auth_failures.clear()
    bedrock_server.corrupt_message = None
    return bedrock_server


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, bedrock_server: FakeBedrock) -> Iterator[RunningProxy]:
    config = proxy_config(
        [
            bedrock("claude", bedrock_server, **STATIC_KEYS),
            bedrock("claude-profile", bedrock_server, model_id=f"converse/us.{MODEL_ID}", **STATIC_KEYS),
            bedrock("nova", bedrock_server, model_id="amazon.nova-pro-v1:0", **STATIC_KEYS),
        ],
        router_settings={"num_retries": 0},
    )
    with running_proxy(tmp_path_factory.mktemp("bedrock"), config) as running:
        yield running


@pytest.fixture
def client(proxy: RunningProxy, upstream: FakeBedrock) -> Iterator[openai.OpenAI]:
    with sync_client(proxy) as sdk:
        yield sdk


@pytest.fixture
def admin(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with proxy.client() as http:
        yield http


def test_a_chat_completion_is_served_by_converse_and_priced_from_the_table(
    proxy: RunningProxy, client: openai.OpenAI, admin: httpx.Client, upstream: FakeBedrock
) -> None:
    customer = new_customer(admin)
    upstream.behavior = Behavior(prompt_tokens=12)
    raw = client.chat.completions.with_raw_response.create(
        model="claude",
        messages=[
            {"role": "system", "content": "Be terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": PIXEL}},
                ],
            },
        ],
        temperature=0.3,
        max_tokens=100,
        stop=["END"],
        user=customer,
    )
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == "Hello! This is the fake upstream speaking."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 7)
    expected = 12 * INPUT + 7 * OUTPUT
    assert usd_to_nanos(raw.headers["x-litellm-response-cost"]) == expected
    assert customer_spend_nanos(admin, customer) == expected
    [log] = spend_logs(proxy, admin, customer)
    assert usd_to_nanos(log["spend"]) == expected
    assert upstream.auth_failures == []
    sent = upstream.last_request
    assert sent.path == f"/model/{MODEL_ID}/converse"
    assert sent.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")
    assert sent.json == {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "What is this?"},
                    {"image": {"format": "png", "source": {"bytes": PIXEL.split(",", 1)[1]}}},
                ],
            }
        ],
        "system": [{"text": "Be terse."}],
        "inferenceConfig": {"maxTokens": 100, "temperature": 0.3, "stopSequences": ["END"]},
    }


def test_cache_reads_and_writes_are_priced_at_their_own_prices_to_the_nano_dollar(
    proxy: RunningProxy, client: openai.OpenAI, admin: httpx.Client, upstream: FakeBedrock
) -> None:
    customer = new_customer(admin)
    upstream.behavior = Behavior(
        usage={
            "inputTokens": 10,
            "outputTokens": 50,
            "totalTokens": 1_260,
            "cacheReadInputTokens": 1_000,
            "cacheWriteInputTokens": 200,
        }
    )
    long_context: Any = {"type": "text", "text": "A long document. " * 50, "cache_control": {"type": "ephemeral"}}
    raw = client.chat.completions.with_raw_response.create(
        model="claude-profile",
        messages=[{"role": "system", "content": [long_context]}, {"role": "user", "content": "Summarise"}],
        user=customer,
    )
    completion = raw.parse()
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 1_210 and completion.usage.total_tokens == 1_260
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1_000
    expected = 10 * INPUT + 1_000 * CACHE_READ + 200 * CACHE_WRITE + 50 * OUTPUT
    assert expected == 1_830_000
    assert usd_to_nanos(raw.headers["x-litellm-response-cost"]) == expected
    assert customer_spend_nanos(admin, customer) == expected
    [log] = spend_logs(proxy, admin, customer)
    assert usd_to_nanos(log["spend"]) == expected and log["prompt_tokens"] == 1_210
    sent = upstream.last_request
    assert sent.path == f"/model/us.{MODEL_ID}/converse"  # an inference profile, priced as the model it serves
    assert sent.json["system"][-1] == {"cachePoint": {"type": "default"}}


def test_a_stream_arrives_as_openai_chunks_with_usage_and_is_charged_once(
    proxy: RunningProxy, client: openai.OpenAI, admin: httpx.Client, upstream: FakeBedrock
) -> None:
    customer = new_customer(admin)
    upstream.behavior = Behavior(usage={"inputTokens": 20, "outputTokens": 9, "cacheReadInputTokens": 100})
    stream = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
        user=customer,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! This is the fake upstream speaking."
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (120, 9)
    expected = 20 * INPUT + 100 * CACHE_READ + 9 * OUTPUT
    assert customer_spend_nanos(admin, customer) == expected
    [log] = spend_logs(proxy, admin, customer)
    assert usd_to_nanos(log["spend"]) == expected
    assert upstream.last_request.path == f"/model/{MODEL_ID}/converse-stream"
    assert upstream.auth_failures == []


def test_a_stream_without_include_usage_has_no_usage_chunk_but_is_still_charged(
    client: openai.OpenAI, admin: httpx.Client, upstream: FakeBedrock
) -> None:
    customer = new_customer(admin)
    upstream.behavior = Behavior(usage={"inputTokens": 20, "outputTokens": 9})
    chunks = list(
        client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "Say hello"}], stream=True, user=customer
        )
    )
    assert all(c.choices for c in chunks) and all(c.usage is None for c in chunks)
    assert customer_spend_nanos(admin, customer) == 20 * INPUT + 9 * OUTPUT


def test_tools_round_trip_through_tool_use_and_tool_result(client: openai.OpenAI, upstream: FakeBedrock) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(
        model="claude", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.function.arguments == '{"city":"Paris","unit":"celsius"}'
    assert upstream.last_request.json["toolConfig"]["toolChoice"] == {"any": {}}

    messages += [
        {
            "role": "assistant",
            "content": choice.message.content,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees and sunny"},
    ]
    second = client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "The tool said: 18 degrees and sunny"
    assert second.choices[0].finish_reason == "stop"
    sent = upstream.last_request.json["messages"]
    assert sent[1]["content"][1] == {
        "toolUse": {"toolUseId": call.id, "name": "get_weather", "input": {"city": "Paris", "unit": "celsius"}}
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"toolResult": {"toolUseId": call.id, "content": [{"text": "18 degrees and sunny"}]}}],
    }
    assert upstream.auth_failures == []


def test_streamed_tool_calls_arrive_as_openai_tool_call_deltas(client: openai.OpenAI, upstream: FakeBedrock) -> None:
    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0].id and deltas[0].function is not None and deltas[0].function.name == "get_weather"
    assert "".join((d.function.arguments or "") for d in deltas if d.function) == '{"city":"Paris","unit":"celsius"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_what_converse_cannot_do_is_a_400_before_any_call(client: openai.OpenAI, upstream: FakeBedrock) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], n=2)
    assert "Converse has no `n`" in caught.value.message
    assert upstream.requests == []


def test_bedrock_throttling_is_a_429_and_server_errors_a_502(client: openai.OpenAI, upstream: FakeBedrock) -> None:
    upstream.behavior = Behavior(status=429, error_message="Too many requests, please wait before trying again.")
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    upstream.behavior = Behavior(status=503, error_message="Service unavailable")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    assert SECRET_ACCESS_KEY not in str(caught.value.body)


def test_a_model_the_table_does_not_price_is_served_and_named_in_the_startup_warning(
    proxy: RunningProxy, client: openai.OpenAI
) -> None:
    reply = client.chat.completions.create(model="nova", messages=[{"role": "user", "content": "hi"}])
    assert reply.choices[0].message.content
    router = proxy.state.router
    assert router.group("nova")[0].price is None
    assert router.group("claude")[0].price is not None


def test_credentials_from_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bedrock_server: FakeBedrock
) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_REGION", REGION)
    with FakeBedrock(session_token=SESSION_TOKEN) as fake:
        entry = {"model_name": "claude", "litellm_params": {"model": f"bedrock/{MODEL_ID}", "api_base": fake.url}}
        with running_proxy(tmp_path, proxy_config([entry])) as proxy, sync_client(proxy) as sdk:
            reply = sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
            assert reply.choices[0].message.content
            chunks = list(
                sdk.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], stream=True)
            )
            assert (
                "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                == reply.choices[0].message.content
            )
        assert fake.auth_failures == []
        assert fake.last_request.headers["x-amz-security-token"] == SESSION_TOKEN


def test_a_bedrock_model_without_any_region_is_a_config_error_naming_aws_region_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text(f"model_list:\n  - model_name: claude\n    litellm_params:\n      model: bedrock/{MODEL_ID}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert any("litellm_params.aws_region_name: required for bedrock/" in p for p in caught.value.problems)
    monkeypatch.setenv("AWS_REGION", REGION)
    assert load_config(path).config.model_list[0].litellm_params.model == f"bedrock/{MODEL_ID}"


def test_a_corrupted_stream_frame_ends_the_stream_with_an_error_event(
    client: openai.OpenAI, upstream: FakeBedrock
) -> None:
    upstream.corrupt_message = 3
    with pytest.raises(openai.APIError, match="CRC"):
        list(client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}], stream=True))
