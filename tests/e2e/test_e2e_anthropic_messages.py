"""`POST /v1/messages` end to end: the official `anthropic` SDK against a proxy serving OpenAI-compatible models.

What a Claude-style client relies on: its key in `x-api-key`; the message (JSON) and the event stream
(`client.messages.stream`) in Anthropic's shapes; tools round trip (tool_use out, tool_result back); images and the
system prompt reach the model; `metadata.user_id` names the customer, whose budget holds (400 once spent) and whose
spend and logs (`call_type` anthropic_messages) are exact to the nano-dollar; errors arrive in Anthropic's envelope
with statuses the SDK maps to its exception classes.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from anthropic.types import ToolParam

from haimaker.money import usd_to_nanos
from tests.e2e.e2e_stack import customer_spend_nanos, new_customer, openai_deployment, proxy_config, spend_logs
from tests.support.fakes import BEHAVIOR_FIELD, FakeOpenAI
from tests.support.fakes.openai_tools import FakeOpenAIToolCaller
from tests.support.proxy import RunningProxy, running_proxy

# 1 µ$ per prompt token, 2 µ$ per completion token, 0.1 µ$ per cached prompt token: exact in nano-dollars.
PRICE: dict[str, Any] = {
    "input_cost_per_token": 1e-06,
    "output_cost_per_token": 2e-06,
    "cache_read_input_token_cost": 1e-07,
}
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PIXEL_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()


@pytest.fixture(scope="module")
def tool_server() -> Iterator[FakeOpenAIToolCaller]:
    with FakeOpenAIToolCaller() as fake:
        yield fake


@pytest.fixture
def tool_upstream(tool_server: FakeOpenAIToolCaller) -> FakeOpenAIToolCaller:
    tool_server.reset()
    return tool_server


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI, tool_server: FakeOpenAIToolCaller
) -> Iterator[RunningProxy]:
    config = proxy_config(
        [
            openai_deployment("gpt-4o", openai_server, **PRICE),
            openai_deployment("tool-model", tool_server, upstream_model="gpt-4o", **PRICE),
        ],
        router_settings={"num_retries": 0},
    )
    with running_proxy(tmp_path_factory.mktemp("messages"), config) as running:
        yield running


@pytest.fixture
def client(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=proxy.url, api_key=proxy.master_key, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def admin(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with proxy.client() as http:
        yield http


def usage_behavior(prompt: int = 100, completion: int = 20, cached: int = 0) -> dict[str, Any]:
    return {BEHAVIOR_FIELD: {"prompt_tokens": prompt, "completion_tokens": completion, "cached_tokens": cached}}


def test_a_message_is_answered_in_anthropics_shape_and_billed_to_metadata_user_id(
    proxy: RunningProxy, client: anthropic.Anthropic, admin: httpx.Client, openai_upstream: FakeOpenAI
) -> None:
    customer = new_customer(admin)
    raw = client.messages.with_raw_response.create(
        model="gpt-4o",
        max_tokens=64,
        system="You are terse.",
        messages=[{"role": "user", "content": "Say hello"}],
        metadata={"user_id": customer},
        stop_sequences=["END"],
        # This SDK version no longer takes the sampling parameters as arguments; the API still does.
        extra_body={"temperature": 0.2, "top_k": 5, **usage_behavior(prompt=100, completion=20, cached=40)},
    )
    message = raw.parse()
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.model == "gpt-4o"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "Hello! This is the fake upstream speaking."  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    # input_tokens excludes the cache reads, which are reported on their own.
    assert (message.usage.input_tokens, message.usage.output_tokens) == (60, 20)
    assert message.usage.cache_read_input_tokens == 40 and message.usage.cache_creation_input_tokens == 0
    # 60 × 1 µ$ + 40 × 0.1 µ$ + 20 × 2 µ$ = 104 µ$
    assert usd_to_nanos(raw.headers["x-litellm-response-cost"]) == 104_000
    sent = openai_upstream.last_request.json
    assert sent["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hello"},
    ]
    assert sent["max_tokens"] == 64 and sent["stop"] == ["END"] and sent["temperature"] == 0.2
    assert sent["user"] == customer
    assert "top_k" not in sent and "metadata" not in sent and "stop_sequences" not in sent
    assert customer_spend_nanos(admin, customer) == 104_000
    [log] = spend_logs(proxy, admin, customer)
    assert log["call_type"] == "anthropic_messages"
    assert (log["prompt_tokens"], log["completion_tokens"]) == (100, 20)
    assert usd_to_nanos(log["spend"]) == 104_000


def test_a_streamed_message_is_anthropics_event_sequence_and_is_charged_once(
    proxy: RunningProxy, client: anthropic.Anthropic, admin: httpx.Client
) -> None:
    customer = new_customer(admin)
    with client.messages.stream(
        model="gpt-4o",
        max_tokens=64,
        messages=[{"role": "user", "content": "Say hello"}],
        metadata={"user_id": customer},
        extra_body=usage_behavior(prompt=50, completion=7),
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello! This is the fake upstream speaking."
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (50, 7)
    assert customer_spend_nanos(admin, customer) == 50 * 1_000 + 7 * 2_000
    [log] = spend_logs(proxy, admin, customer)
    assert log["call_type"] == "anthropic_messages" and usd_to_nanos(log["spend"]) == 64_000


def test_the_raw_stream_has_exactly_anthropics_events_in_order(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    body = {"model": "gpt-4o", "max_tokens": 10, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    body[BEHAVIOR_FIELD] = {"reply": "one two", "prompt_tokens": 3, "completion_tokens": 2}
    headers = {"x-api-key": proxy.master_key, "anthropic-version": "2023-06-01"}
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        response = http.post("/v1/messages", json=body, headers=headers)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = [block.split("\n") for block in response.text.strip().split("\n\n")]
    names = [lines[0].removeprefix("event: ") for lines in events]
    payloads = [orjson.loads(lines[1].removeprefix("data: ")) for lines in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert [p["type"] for p in payloads] == names
    assert payloads[2]["content_block"] == {"type": "text", "text": ""}
    assert [p["delta"] for p in payloads[3:5]] == [
        {"type": "text_delta", "text": "one"},
        {"type": "text_delta", "text": " two"},
    ]
    assert payloads[6]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert payloads[6]["usage"] == {
        "input_tokens": 3,
        "output_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    # The dialect asks the upstream for usage on its own account.
    assert openai_upstream.last_request.json["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_tools_round_trip_tool_use_out_and_tool_result_back(
    proxy: RunningProxy, client: anthropic.Anthropic, tool_upstream: FakeOpenAIToolCaller, stream: bool
) -> None:
    question: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first: anthropic.types.Message
    if stream:
        with client.messages.stream(
            model="tool-model", max_tokens=100, tools=[WEATHER_TOOL], messages=question
        ) as events:
            first = events.get_final_message()
    else:
        first = client.messages.create(
            model="tool-model",
            max_tokens=100,
            tools=[WEATHER_TOOL],
            tool_choice={"type": "any"},
            messages=question,
        )
    assert first.stop_reason == "tool_use"
    [call] = first.content
    assert call.type == "tool_use" and call.name == "get_weather"
    assert call.input == {"city": "Paris", "unit": "celsius"}
    sent = tool_upstream.last_request.json
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
                "description": "The weather in a city.",
            },
        }
    ]
    if not stream:
        assert sent["tool_choice"] == "required"
    follow_up: list[Any] = [
        *question,
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": call.id, "content": [{"type": "text", "text": "18 C, sunny"}]},
                {"type": "text", "text": "Thanks!"},
            ],
        },
    ]
    answer = client.messages.create(model="tool-model", max_tokens=100, tools=[WEATHER_TOOL], messages=follow_up)
    assert answer.stop_reason == "end_turn"
    assert answer.content[0].text == "The tool said: 18 C, sunny"  # type: ignore[union-attr]
    messages = tool_upstream.last_request.json["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris","unit":"celsius"}'},
            }
        ],
    }
    assert messages[2] == {"role": "tool", "tool_call_id": call.id, "content": "18 C, sunny"}
    assert messages[3] == {"role": "user", "content": "Thanks!"}


def test_images_and_system_blocks_reach_the_model_as_chat_parts_without_cache_control(
    client: anthropic.Anthropic, openai_upstream: FakeOpenAI
) -> None:
    client.messages.create(
        model="gpt-4o",
        max_tokens=20,
        system=[{"type": "text", "text": "Describe images.", "cache_control": {"type": "ephemeral"}}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL_PNG}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
                    {"type": "text", "text": "What are these?"},
                ],
            }
        ],
    )
    sent = openai_upstream.last_request.json["messages"]
    # An OpenAI deployment is not sent Anthropic's `cache_control` (OpenAI refuses fields it does not know).
    assert sent[0] == {"role": "system", "content": [{"type": "text", "text": "Describe images."}]}
    assert sent[1] == {
        "role": "user",
        "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL_PNG}"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
            {"type": "text", "text": "What are these?"},
        ],
    }


def test_a_customers_budget_holds_on_messages_with_a_400_once_spent(
    proxy: RunningProxy, client: anthropic.Anthropic, admin: httpx.Client
) -> None:
    customer = new_customer(admin, max_budget=0.0001)
    ask: dict[str, Any] = {
        "model": "gpt-4o",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
        "metadata": {"user_id": customer},
        "extra_body": usage_behavior(prompt=100, completion=20),
    }
    client.messages.create(**ask)  # 140 µ$: over the 100 µ$ budget
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(**ask)
    assert refused.value.status_code == 400
    body = refused.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["litellm_error_type"] == "budget_exceeded"
    assert "Budget has been exceeded" in body["error"]["message"]
    assert customer_spend_nanos(admin, customer) == 140_000
    # The charged call, and the refusal as a failure row that costs nothing (the customer's latest requests).
    logs = spend_logs(proxy, admin, customer)
    assert sorted((log["status"], log["spend"]) for log in logs) == [("failure", 0), ("success", 0.00014)]


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param(lambda c: orjson.dumps({"user_id": c}).decode(), id="metadata-as-json-string"),
        pytest.param(lambda c: {"user_id": f"  {c}  "}, id="user-id-stripped"),
    ],
)
def test_metadata_user_id_is_read_as_litellm_reads_it(
    proxy: RunningProxy, admin: httpx.Client, openai_upstream: FakeOpenAI, metadata: Any
) -> None:
    customer = new_customer(admin)
    body = {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    body["metadata"] = metadata(customer)
    body[BEHAVIOR_FIELD] = {"prompt_tokens": 10, "completion_tokens": 1}
    response = admin.post("/v1/messages", json=body)
    assert response.status_code == 200, response.text
    assert customer_spend_nanos(admin, customer) == 12_000


def test_a_claude_code_user_id_json_string_is_the_customer_id_verbatim(
    proxy: RunningProxy, client: anthropic.Anthropic, admin: httpx.Client
) -> None:
    # LiteLLM keeps a user_id that is itself JSON as the id (it only refuses it with validate_end_user_id_in_db).
    user_id = orjson.dumps({"device_id": uuid.uuid4().hex, "account_uuid": "", "session_id": str(uuid.uuid4())})
    client.messages.create(
        model="gpt-4o",
        max_tokens=5,
        messages=[{"role": "user", "content": "hi"}],
        metadata={"user_id": user_id.decode()},
        extra_body=usage_behavior(prompt=10, completion=1),
    )
    assert customer_spend_nanos(admin, user_id.decode()) == 12_000


def test_errors_are_anthropic_envelopes_the_sdk_maps_to_its_exceptions(
    proxy: RunningProxy, client: anthropic.Anthropic, admin: httpx.Client, openai_upstream: FakeOpenAI
) -> None:
    ask: dict[str, Any] = {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    with (
        anthropic.Anthropic(base_url=proxy.url, api_key="sk-wrong", max_retries=0) as stranger,
        pytest.raises(anthropic.AuthenticationError) as unauthenticated,
    ):
        stranger.messages.create(**ask)
    assert unauthenticated.value.body == {
        "type": "error",
        "error": {
            "type": "authentication_error",
            "message": "Authentication Error, Invalid proxy server token passed. Unable to find token.",
            "litellm_error_type": "auth_error",
        },
    }
    with pytest.raises(anthropic.BadRequestError) as unknown:
        client.messages.create(**{**ask, "model": "no-such-model"})
    assert unknown.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    blocked = new_customer(admin, blocked=True)
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        client.messages.create(**ask, metadata={"user_id": blocked})
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    limited = new_customer(admin, rpm_limit=1)
    client.messages.create(**ask, metadata={"user_id": limited})
    with pytest.raises(anthropic.RateLimitError) as throttled:
        client.messages.create(**ask, metadata={"user_id": limited})
    assert throttled.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    openai_upstream.script(openai_upstream.behavior.replace(status=500))
    with pytest.raises(anthropic.InternalServerError) as failed:
        client.messages.create(**ask)
    assert failed.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_an_invalid_messages_request_is_a_400_naming_the_field(proxy: RunningProxy, admin: httpx.Client) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens: Field required"),
        ({"model": "gpt-4o", "max_tokens": 5}, "messages: Field required"),
        (
            {
                "model": "gpt-4o",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "tools.0.type: server tool 'web_search_20250305' is not supported on this route (custom tools only)",
        ),
    ]
    for body, message in cases:
        response = admin.post("/v1/messages", json=body)
        assert response.status_code == 400, response.text
        assert response.json() == {"type": "error", "error": {"type": "invalid_request_error", "message": message}}


def test_messages_is_also_served_without_the_v1_prefix(proxy: RunningProxy, admin: httpx.Client) -> None:
    body = {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    response = admin.post("/messages", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
