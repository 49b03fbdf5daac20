"""`client.responses.create` of the official openai SDK through the proxy (issue 13): forwarded natively to an OpenAI
deployment (a strict fake `/v1/responses`), translated to chat for the others (`use_chat_completions_api`, mock),
JSON and streaming, tools round trips, the customer from `user` / `safety_identifier`, budgets, spend logs with
`call_type` "aresponses", and costs to the nano-dollar from the Responses usage.
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import orjson
import pytest

from haimaker.money import usd_to_nanos
from tests.e2e.e2e_stack import openai_deployment, proxy_config, sync_client
from tests.support.fakes import Behavior, FakeOpenAI
from tests.support.fakes.openai_tools import FakeOpenAIToolCaller
from tests.support.proxy import RunningProxy, running_proxy

INPUT_USD = Decimal("0.0000025")
OUTPUT_USD = Decimal("0.00001")
CACHE_READ_USD = Decimal("0.00000125")
PRICE: dict[str, Any] = {
    "input_cost_per_token": float(INPUT_USD),
    "output_cost_per_token": float(OUTPUT_USD),
    "cache_read_input_token_cost": float(CACHE_READ_USD),
}
WEATHER_TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def _cost(prompt: int, completion: int, cached: int = 0) -> int:
    return usd_to_nanos((prompt - cached) * INPUT_USD + cached * CACHE_READ_USD + completion * OUTPUT_USD)


@pytest.fixture(scope="module")
def tool_server() -> Iterator[FakeOpenAIToolCaller]:
    with FakeOpenAIToolCaller() as fake:
        yield fake


@pytest.fixture(scope="module")
def proxy(
    tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI, tool_server: FakeOpenAIToolCaller
) -> Iterator[RunningProxy]:
    config = proxy_config(
        [
            openai_deployment("gpt-4o", openai_server, **PRICE),
            openai_deployment("bridged", tool_server, upstream_model="gpt-4o", use_chat_completions_api=True, **PRICE),
            {"model_name": "mocked", "litellm_params": {"model": "mock/mocked", **PRICE}},
        ],
        router_settings={"num_retries": 0},
    )
    with running_proxy(tmp_path_factory.mktemp("responses"), config) as running:
        yield running


@pytest.fixture
def client(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, tool_server: FakeOpenAIToolCaller
) -> Iterator[openai.OpenAI]:
    tool_server.reset()
    with sync_client(proxy) as sdk:
        yield sdk


def _logs(proxy: RunningProxy, customer: str) -> list[dict[str, Any]]:
    proxy.call(proxy.state.recorder.flush())
    with proxy.client() as http:
        response = http.get("/spend/logs", params={"end_user": customer})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def _spend_nanos(proxy: RunningProxy, customer: str) -> int:
    with proxy.client() as http:
        info = http.get("/customer/info", params={"end_user_id": customer}).json()
    return usd_to_nanos(Decimal(repr(info["spend"])))


# ---- native: forwarded as is ----------------------------------------------------------------------------------


def test_native_json_is_forwarded_untouched_and_priced_from_responses_usage(
    proxy: RunningProxy, client: openai.OpenAI, openai_upstream: FakeOpenAI
) -> None:
    openai_upstream.behavior = Behavior(reply="Hi there friend", prompt_tokens=40, completion_tokens=3, cached_tokens=8)
    raw = client.responses.with_raw_response.create(
        model="gpt-4o", input="Say hi", instructions="Be brief.", max_output_tokens=50, user="native-json"
    )
    response = raw.parse()
    assert response.output_text == "Hi there friend"
    assert response.usage is not None and response.usage.input_tokens == 40
    sent = openai_upstream.last_request
    assert sent.path == "/v1/responses"
    assert sent.body == {
        "model": "gpt-4o",
        "input": "Say hi",
        "instructions": "Be brief.",
        "max_output_tokens": 50,
        "user": "native-json",
    }
    cost = _cost(40, 3, cached=8)
    assert usd_to_nanos(Decimal(raw.headers["x-litellm-response-cost"])) == cost
    [log] = _logs(proxy, "native-json")
    assert log["call_type"] == "aresponses"
    assert (log["prompt_tokens"], log["completion_tokens"]) == (40, 3)
    assert _spend_nanos(proxy, "native-json") == cost


def test_native_stream_ends_at_response_completed_and_is_charged(
    proxy: RunningProxy, client: openai.OpenAI, openai_upstream: FakeOpenAI
) -> None:
    openai_upstream.behavior = Behavior(reply="one two three", prompt_tokens=12, completion_tokens=3)
    with client.responses.stream(model="gpt-4o", input="count", safety_identifier="native-stream") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "one two three" == final.output_text
    sent = openai_upstream.last_request.body
    assert sent["stream"] is True and "stream_options" not in sent  # the Responses API refuses include_usage
    [log] = _logs(proxy, "native-stream")
    assert log["call_type"] == "aresponses" and log["spend"] == pytest.approx(float(Decimal(_cost(12, 3)) / 10**9))
    assert _spend_nanos(proxy, "native-stream") == _cost(12, 3)


def test_native_stream_cut_midway_is_charged_for_the_text_it_delivered(
    proxy: RunningProxy, client: openai.OpenAI, openai_upstream: FakeOpenAI
) -> None:
    openai_upstream.behavior = Behavior(reply="alpha beta gamma delta", die_after_chunks=6)
    with pytest.raises(openai.APIError):
        with client.responses.stream(model="gpt-4o", input="words please", user="native-cut") as stream:
            for _ in stream:
                pass
    [log] = _logs(proxy, "native-cut")
    assert log["status"] != "failure" and log["completion_tokens"] > 0 and log["spend"] > 0


def test_native_tools_round_trip(proxy: RunningProxy, client: openai.OpenAI, openai_upstream: FakeOpenAI) -> None:
    first = client.responses.create(
        model="gpt-4o", input="Weather in Paris?", tools=[WEATHER_TOOL], tool_choice="required", user="native-tools"
    )
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and orjson.loads(call.arguments) == {"city": "Paris"}
    second = client.responses.create(
        model="gpt-4o",
        input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C and sunny"},
        ],
        tools=[WEATHER_TOOL],
        user="native-tools",
    )
    assert second.output_text
    assert openai_upstream.last_request.body["input"][2]["output"] == "18C and sunny"
    assert len(_logs(proxy, "native-tools")) == 2


# ---- translated: served by chat -------------------------------------------------------------------------------


def test_translated_json_tools_round_trip_in_chat_shape_upstream(
    proxy: RunningProxy, client: openai.OpenAI, tool_server: FakeOpenAIToolCaller
) -> None:
    first = client.responses.create(
        model="bridged", input="Weather in Paris?", instructions="Use tools.", tools=[WEATHER_TOOL], user="bridge-tools"
    )
    sent = tool_server.last_request.body
    assert sent["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {k: WEATHER_TOOL[k] for k in ("name", "description", "parameters")},
        }
    ]
    assert first.object == "response" and first.status == "completed"
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert orjson.loads(call.arguments) == tool_server.tool_arguments
    second = client.responses.create(
        model="bridged",
        input=[
            {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
            {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "18C"},
        ],
        tools=[WEATHER_TOOL],
        user="bridge-tools",
    )
    assert second.output_text == "The tool said: 18C"
    messages = tool_server.last_request.body["messages"]
    assert messages[1]["tool_calls"][0]["id"] == call.call_id
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "18C"}
    assert second.usage is not None
    assert (second.usage.input_tokens, second.usage.output_tokens) == (120, 30)
    rows = _logs(proxy, "bridge-tools")
    assert [row["call_type"] for row in rows] == ["aresponses", "aresponses"]
    assert _spend_nanos(proxy, "bridge-tools") == 2 * _cost(120, 30)


def test_translated_stream_tool_call_parses_in_the_sdk_stream_helper(
    proxy: RunningProxy, client: openai.OpenAI, tool_server: FakeOpenAIToolCaller
) -> None:
    with client.responses.stream(
        model="bridged", input="Weather in Paris?", tools=[WEATHER_TOOL], user="bridge-stream"
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert "response.function_call_arguments.delta" in kinds and kinds[-1] == "response.completed"
    [call] = final.output
    assert call.type == "function_call" and orjson.loads(call.arguments) == tool_server.tool_arguments
    assert final.usage is not None and final.usage.total_tokens == 150
    assert tool_server.last_request.body["stream_options"] == {"include_usage": True}
    [log] = _logs(proxy, "bridge-stream")
    assert log["call_type"] == "aresponses"
    assert _spend_nanos(proxy, "bridge-stream") == _cost(120, 30)


def test_translated_text_stream_over_mock(proxy: RunningProxy, client: openai.OpenAI) -> None:
    events = list(client.responses.create(model="mocked", input="hello", stream=True, user="mock-stream"))
    numbers = [event.sequence_number for event in events]
    assert numbers == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == completed.response.output_text and text
    usage = completed.response.usage
    assert usage is not None
    assert _spend_nanos(proxy, "mock-stream") == _cost(usage.input_tokens, usage.output_tokens)


def test_stateful_and_builtin_features_are_refused_with_a_clear_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="mocked", input="again", previous_response_id="resp_123")
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="mocked", input="search", tools=[{"type": "web_search"}])
    assert "web_search" in refused.value.message


def test_a_spent_budget_refuses_the_next_response(proxy: RunningProxy, client: openai.OpenAI) -> None:
    with proxy.client() as http:
        assert http.post("/customer/new", json={"user_id": "broke", "max_budget": 0.0000001}).status_code == 200
    client.responses.create(model="mocked", input="spend it", user="broke")
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="mocked", input="more", user="broke")
    assert "budget" in refused.value.message.lower()
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4o", input="native too", user="broke")


def test_a_request_without_input_is_a_400_in_openais_envelope(proxy: RunningProxy) -> None:
    response = httpx.post(proxy.url + "/v1/responses", json={"model": "gpt-4o"}, headers=proxy.headers(), timeout=10)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"
