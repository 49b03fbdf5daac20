"""`anthropic/` deployments end to end: the official `openai` SDK against a proxy whose models are served by a strict
fake Anthropic Messages API.

What a client of an OpenAI-shaped gateway relies on: chat answers (JSON and streamed, tool calls included) in
OpenAI's shape whoever serves them; images, stop sequences, `max_tokens` and the system prompt reach Claude in its
own format; prompt-caching usage (cache reads and writes) priced at the model's table prices to the nano-dollar, in the
response-cost header, the customer's spend and the spend logs; Anthropic's errors mapped to the statuses the SDK
turns into its exception classes (429 kept with retry-after, 5xx and 529 overloaded as 502), never a key leaked.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionFunctionToolParam

from haimaker.money import usd_to_nanos
from tests.e2e.e2e_stack import customer_spend_nanos, new_customer, proxy_config, spend_logs, sync_client
from tests.support.fakes import BEHAVIOR_FIELD, Behavior
from tests.support.fakes.anthropic import ANTHROPIC_VERSION, FakeAnthropic
from tests.support.proxy import RunningProxy, running_proxy

UPSTREAM_MODEL = "claude-3-5-sonnet-20241022"
# claude-3-5-sonnet in accounting/prices.json, per token in nano-dollars.
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


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[FakeAnthropic]:
    with FakeAnthropic() as fake:
        yield fake


@pytest.fixture
def upstream(anthropic_server: FakeAnthropic) -> FakeAnthropic:
    anthropic_server.reset()
    return anthropic_server


def claude(model_name: str, fake: FakeAnthropic, **params: Any) -> dict[str, Any]:
    litellm_params = {"model": f"anthropic/{UPSTREAM_MODEL}", "api_base": fake.base_url, "api_key": fake.api_key}
    return {"model_name": model_name, "litellm_params": {**litellm_params, **params}}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, anthropic_server: FakeAnthropic) -> Iterator[RunningProxy]:
    config = proxy_config(
        [
            claude("claude", anthropic_server),
            claude("claude-wrong-key", anthropic_server, api_key="sk-ant-wrong-0123456789abcdef"),
        ],
        router_settings={"num_retries": 0},
    )
    with running_proxy(tmp_path_factory.mktemp("anthropic"), config) as running:
        yield running


@pytest.fixture
def client(proxy: RunningProxy, upstream: FakeAnthropic) -> Iterator[openai.OpenAI]:
    with sync_client(proxy) as sdk:
        yield sdk


@pytest.fixture
def admin(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with proxy.client() as http:
        yield http


def usage(**counts: int) -> dict[str, Any]:
    return {BEHAVIOR_FIELD: {"usage": counts}}


def test_a_chat_completion_is_served_by_the_messages_api_and_priced_from_the_table(
    client: openai.OpenAI, upstream: FakeAnthropic
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="claude",
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say hello"}],
        temperature=0.3,
        extra_body=usage(input_tokens=12, output_tokens=8),
    )
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == "Hello! This is the fake upstream speaking."
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (12, 8)
    assert usd_to_nanos(raw.headers["x-litellm-response-cost"]) == 12 * INPUT + 8 * OUTPUT
    sent = upstream.last_request
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == upstream.api_key and sent.headers["anthropic-version"] == ANTHROPIC_VERSION
    assert "authorization" not in sent.headers
    assert sent.json["model"] == UPSTREAM_MODEL
    assert sent.json["system"] == [{"type": "text", "text": "Be terse."}]
    assert sent.json["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Say hello"}]}]
    assert sent.json["max_tokens"] == 8192  # the model's max output, from the price table
    assert sent.json["temperature"] == 0.3


def test_prompt_caching_usage_is_priced_at_cache_read_and_write_prices_to_the_nano_dollar(
    proxy: RunningProxy, client: openai.OpenAI, admin: httpx.Client, upstream: FakeAnthropic
) -> None:
    customer = new_customer(admin)
    long_context = {"type": "text", "text": "A long document. " * 50, "cache_control": {"type": "ephemeral"}}
    system: Any = {"role": "system", "content": [long_context]}  # cache_control is not in the SDK's types
    raw = client.chat.completions.with_raw_response.create(
        model="claude",
        messages=[
            system,
            {"role": "user", "content": "Summarise"},
        ],
        user=customer,
        extra_body=usage(
            input_tokens=10, cache_read_input_tokens=1_000, cache_creation_input_tokens=200, output_tokens=50
        ),
    )
    completion = raw.parse()
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 1_210 and completion.usage.total_tokens == 1_260
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1_000
    assert completion.usage.model_extra and completion.usage.model_extra["cache_creation_input_tokens"] == 200
    expected = 10 * INPUT + 1_000 * CACHE_READ + 200 * CACHE_WRITE + 50 * OUTPUT
    assert expected == 1_830_000
    assert usd_to_nanos(raw.headers["x-litellm-response-cost"]) == expected
    assert customer_spend_nanos(admin, customer) == expected
    [log] = spend_logs(proxy, admin, customer)
    assert usd_to_nanos(log["spend"]) == expected and log["prompt_tokens"] == 1_210
    sent = upstream.last_request.json
    assert sent["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert sent["metadata"] == {"user_id": customer}


def test_a_stream_arrives_as_openai_chunks_with_usage_and_is_charged_once(
    proxy: RunningProxy, client: openai.OpenAI, admin: httpx.Client, upstream: FakeAnthropic
) -> None:
    customer = new_customer(admin)
    stream = client.chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Say hello"}],
        stream=True,
        stream_options={"include_usage": True},
        user=customer,
        extra_body=usage(input_tokens=20, cache_read_input_tokens=100, output_tokens=9),
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
    sent = upstream.last_request.json
    assert sent["stream"] is True and "stream_options" not in sent


def test_a_stream_without_include_usage_has_no_usage_chunk_but_is_still_charged(
    client: openai.OpenAI, admin: httpx.Client
) -> None:
    customer = new_customer(admin)
    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "Say hello"}],
            stream=True,
            user=customer,
            extra_body=usage(input_tokens=5, output_tokens=3),
        )
    )
    assert all(c.choices for c in chunks)
    assert customer_spend_nanos(admin, customer) == 5 * INPUT + 3 * OUTPUT


def test_tools_round_trip_as_tool_calls_then_tool_results(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(
        model="claude", messages=messages, tools=[WEATHER_TOOL], tool_choice="auto", parallel_tool_calls=False
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "Let me check."
    [call] = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("toolu_")
    assert call.function.arguments == '{"city":"Paris","unit":"celsius"}'
    sent = upstream.last_request.json
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": WEATHER_TOOL["function"].get("parameters"),
        }
    ]
    assert sent["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18C"},
    ]
    second = client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "The tool said: 18C"
    assert second.choices[0].finish_reason == "stop"
    turns = upstream.last_request.json["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][1] == {
        "type": "tool_use",
        "id": call.id,
        "name": "get_weather",
        "input": {"city": "Paris", "unit": "celsius"},
    }
    assert turns[2]["content"] == [{"type": "tool_result", "tool_use_id": call.id, "content": "18C"}]


def test_a_streamed_tool_call_arrives_as_indexed_deltas(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            tools=[WEATHER_TOOL],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            stream=True,
        )
    )
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or ()]
    assert deltas[0].index == 0 and deltas[0].id and deltas[0].function and deltas[0].function.name == "get_weather"
    arguments = "".join(d.function.arguments or "" for d in deltas if d.function)
    assert arguments == '{"city":"Paris","unit":"celsius"}'
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_images_reach_claude_as_base64_and_url_sources(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    client.chat.completions.create(
        model="claude",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": PIXEL}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                ],
            }
        ],
    )
    blocks = upstream.last_request.json["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL.split(",", 1)[1]},
    }
    assert blocks[2] == {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}


def test_stop_and_max_tokens_map_to_stop_sequences_and_finish_reasons(
    client: openai.OpenAI, upstream: FakeAnthropic
) -> None:
    stopped = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "Hi"}], stop=["fake"]
    )
    assert stopped.choices[0].message.content == "Hello! This is the "
    assert stopped.choices[0].finish_reason == "stop"
    assert upstream.last_request.json["stop_sequences"] == ["fake"]
    cut = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}], max_tokens=3)
    assert cut.choices[0].message.content == "Hello! This is"
    assert cut.choices[0].finish_reason == "length"
    assert upstream.last_request.json["max_tokens"] == 3


def test_n_above_one_is_a_400_before_any_upstream_call(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}], n=2)
    assert "n must be 1" in caught.value.message
    assert upstream.requests == []


def test_an_upstream_429_stays_a_429_with_its_retry_after(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    upstream.behavior = upstream.behavior.replace(status=429, headers={"retry-after": "7"})
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 429
    assert caught.value.response.headers.get("retry-after") == "7"
    assert "Rate limit error" in caught.value.message


@pytest.mark.parametrize("status", [500, 529])
def test_an_upstream_5xx_or_overloaded_is_a_502(client: openai.OpenAI, upstream: FakeAnthropic, status: int) -> None:
    upstream.behavior = upstream.behavior.replace(status=status, error_message="Overloaded")
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 502
    assert f"HTTP {status}" in caught.value.message and "Overloaded" in caught.value.message


def test_an_upstream_400_stays_a_400_with_anthropics_message(client: openai.OpenAI, upstream: FakeAnthropic) -> None:
    upstream.behavior = upstream.behavior.replace(status=400, error_message="messages: prompt is too long")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}])
    assert caught.value.status_code == 400
    assert "prompt is too long" in caught.value.message


def test_a_wrong_upstream_key_is_a_401_that_never_shows_the_key(client: openai.OpenAI) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="claude-wrong-key", messages=[{"role": "user", "content": "Hi"}])
    assert "sk-ant-wrong" not in str(caught.value.body) and "0123456789abcdef" not in caught.value.message


def test_an_overloaded_error_mid_stream_ends_the_stream_with_an_error(
    client: openai.OpenAI, upstream: FakeAnthropic
) -> None:
    upstream.behavior = upstream.behavior.replace(stream_error={"type": "overloaded_error", "message": "Overloaded"})
    stream = client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}], stream=True)
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "Overloaded" in caught.value.message


def test_the_anthropic_sdk_on_v1_messages_reaches_claude_with_tools_and_cache_control_intact(
    proxy: RunningProxy, upstream: FakeAnthropic, admin: httpx.Client
) -> None:
    customer = new_customer(admin)
    tool: anthropic.types.ToolParam = {
        "name": "get_weather",
        "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
    system: list[anthropic.types.TextBlockParam] = [
        {"type": "text", "text": "A long rulebook.", "cache_control": {"type": "ephemeral"}}
    ]
    with anthropic.Anthropic(base_url=proxy.url, api_key=proxy.master_key, max_retries=0) as sdk:
        first = sdk.messages.create(
            model="claude",
            max_tokens=100,
            system=system,
            tools=[tool],
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            metadata={"user_id": customer},
        )
        assert first.stop_reason == "tool_use"
        call = first.content[-1]
        assert call.type == "tool_use" and call.input == {"city": "Paris", "unit": "celsius"}
        answer = sdk.messages.create(
            model="claude",
            max_tokens=100,
            system=system,
            tools=[tool],
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {"role": "assistant", "content": first.content},
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": call.id, "content": "18C"},
                        {"type": "text", "text": "Thanks!"},
                    ],
                },
            ],
            metadata={"user_id": customer},
            extra_body=usage(
                input_tokens=7, cache_read_input_tokens=300, cache_creation_input_tokens=40, output_tokens=11
            ),
        )
    assert answer.content[0].type == "text" and answer.content[0].text == "The tool said: 18C"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (7, 11)
    assert answer.usage.cache_read_input_tokens == 300 and answer.usage.cache_creation_input_tokens == 40
    sent = upstream.last_request.json
    assert sent["system"] == [{"type": "text", "text": "A long rulebook.", "cache_control": {"type": "ephemeral"}}]
    assert sent["metadata"] == {"user_id": customer}
    assert [turn["role"] for turn in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": call.id, "content": "18C"},
        {"type": "text", "text": "Thanks!"},
    ]
    [_, log] = sorted(spend_logs(proxy, admin, customer), key=lambda row: row["startTime"])
    assert usd_to_nanos(log["spend"]) == 7 * INPUT + 300 * CACHE_READ + 40 * CACHE_WRITE + 11 * OUTPUT


def test_an_overloaded_frame_as_the_stream_opens_is_a_502_not_a_broken_stream(
    client: openai.OpenAI, upstream: FakeAnthropic
) -> None:
    upstream.behavior = upstream.behavior.replace(
        stream_error={"type": "overloaded_error", "message": "Overloaded"}, die_after_chunks=0
    )
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "Hi"}], stream=True)
    assert caught.value.status_code == 502
    assert "HTTP 529" in caught.value.message and "Overloaded" in caught.value.message


@pytest.fixture(scope="module")
def retrying_proxy(tmp_path_factory: pytest.TempPathFactory, anthropic_server: FakeAnthropic) -> Iterator[RunningProxy]:
    config = proxy_config([claude("claude", anthropic_server)], router_settings={"num_retries": 1})
    with running_proxy(tmp_path_factory.mktemp("anthropic-retries"), config) as running:
        yield running


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_overloaded_answer_is_retried_and_the_call_charged_once(
    retrying_proxy: RunningProxy, upstream: FakeAnthropic, stream: bool
) -> None:
    overloaded = Behavior(status=529, error_message="Overloaded")
    if stream:
        overloaded = Behavior(stream_error={"type": "overloaded_error", "message": "Overloaded"}, die_after_chunks=0)
    upstream.script(overloaded)
    customer = f"cust-{uuid.uuid4().hex[:10]}"
    with retrying_proxy.client() as admin:
        assert admin.post("/customer/new", json={"user_id": customer}).status_code == 200
        with sync_client(retrying_proxy) as sdk:
            if stream:
                chunks = list(
                    sdk.chat.completions.create(
                        model="claude",
                        messages=[{"role": "user", "content": "Hi"}],
                        stream=True,
                        user=customer,
                        extra_body=usage(input_tokens=4, output_tokens=6),
                    )
                )
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
            else:
                completion = sdk.chat.completions.create(
                    model="claude",
                    messages=[{"role": "user", "content": "Hi"}],
                    user=customer,
                    extra_body=usage(input_tokens=4, output_tokens=6),
                )
                text = completion.choices[0].message.content or ""
        assert text == "Hello! This is the fake upstream speaking."
        assert len(upstream.requests) == 2
        assert customer_spend_nanos(admin, customer) == 4 * INPUT + 6 * OUTPUT
