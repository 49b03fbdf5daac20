"""`gemini/` and `vertex_ai/` deployments end to end: the official `openai` SDK against a proxy whose models are
served by a strict fake Google (AI Studio with its API key; Vertex with a bearer token its own OAuth endpoint issued
to a test service account).

What a client relies on: chat answers, JSON and streamed, in OpenAI's shape; tools round-tripped as tool_calls and
tool results; images and `n` reaching Gemini in its own format; usage from `usageMetadata` priced at the table's
gemini-2.5-flash prices to the nano-dollar (cached tokens at the cache-read price, thoughts as output) in the
response-cost header, the customer's spend and the spend logs; Google's errors mapped to the SDK's classes; a config
check that refuses a vertex_ai/ deployment without a project.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletionFunctionToolParam

from haimaker.config.loader import ConfigError, load_config
from haimaker.money import usd_to_nanos
from tests.e2e.e2e_stack import customer_spend_nanos, new_customer, proxy_config, spend_logs, sync_client
from tests.support.fakes.gemini import FakeGoogle
from tests.support.fakes.gemini_wire import GeminiReply
from tests.support.proxy import RunningProxy, running_proxy

# gemini-2.5-flash in accounting/prices.json, per token in nano-dollars.
INPUT, OUTPUT, CACHE_READ = 300, 2_500, 30
WEATHER_TOOL: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAIAAAUAAen6L8YAAAAASUVORK5CYII="
)


@pytest.fixture(scope="module")
def google_server() -> Iterator[FakeGoogle]:
    with FakeGoogle() as fake:
        yield fake


@pytest.fixture
def upstream(google_server: FakeGoogle) -> FakeGoogle:
    google_server.reset()
    return google_server


def models(fake: FakeGoogle) -> list[dict[str, Any]]:
    studio = {"model": "gemini/gemini-2.5-flash", "api_base": fake.url, "api_key": fake.api_key}
    vertex = {
        "model": "vertex_ai/gemini-2.5-flash",
        "api_base": fake.url,
        "vertex_project": fake.project,
        "vertex_location": fake.location,
        "vertex_credentials": fake.service_account(),
    }
    return [
        {"model_name": "flash", "litellm_params": studio},
        {"model_name": "vertex-flash", "litellm_params": vertex},
    ]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, google_server: FakeGoogle) -> Iterator[RunningProxy]:
    config = proxy_config(models(google_server), router_settings={"num_retries": 0})
    with running_proxy(tmp_path_factory.mktemp("gemini"), config) as running:
        yield running


@pytest.fixture
def client(proxy: RunningProxy, upstream: FakeGoogle) -> Iterator[openai.OpenAI]:
    with sync_client(proxy) as sdk:
        yield sdk


@pytest.fixture
def admin(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with proxy.client() as http:
        yield http


@pytest.mark.parametrize("model", ["flash", "vertex-flash"])
def test_a_json_answer_with_cached_and_thought_tokens_is_priced_to_the_nano_dollar(
    proxy: RunningProxy, client: openai.OpenAI, admin: httpx.Client, upstream: FakeGoogle, model: str
) -> None:
    upstream.reply = GeminiReply(text="Hello there from Gemini", cached_tokens=40, thought="thinking hard")
    customer = new_customer(admin)
    raw = client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Say hello"}],
        temperature=0.2,
        max_tokens=50,
        stop=["END"],
        user=customer,
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "Hello there from Gemini"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    # 2 system + 2 user words + 40 cached (Gemini counts them in the prompt); 4 words of text + 2 of thought.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (44, 6)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 40
    expected = 4 * INPUT + 40 * CACHE_READ + 6 * OUTPUT
    assert usd_to_nanos(raw.headers["x-litellm-response-cost"]) == expected
    assert customer_spend_nanos(admin, customer) == expected
    [log] = spend_logs(proxy, admin, customer)
    assert usd_to_nanos(log["spend"]) == expected
    sent = upstream.generation_requests()[-1].json
    assert sent["systemInstruction"] == {"parts": [{"text": "Be terse."}]}
    assert sent["generationConfig"] == {"temperature": 0.2, "maxOutputTokens": 50, "stopSequences": ["END"]}
    if model == "flash":
        assert upstream.last_request.headers["x-goog-api-key"] == upstream.api_key
    else:
        assert upstream.last_request.path.startswith(f"/v1/projects/{upstream.project}/locations/{upstream.location}/")
        assert upstream.last_request.headers["authorization"].startswith("Bearer ya29.fake-")


@pytest.mark.parametrize("model", ["flash", "vertex-flash"])
def test_a_stream_arrives_as_openai_chunks_and_is_charged_once(
    proxy: RunningProxy, client: openai.OpenAI, admin: httpx.Client, upstream: FakeGoogle, model: str
) -> None:
    upstream.reply = GeminiReply(text="one two three four five six seven", chunks=3, cached_tokens=10)
    customer = new_customer(admin)
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Count to seven"}],
        stream=True,
        stream_options={"include_usage": True},
        user=customer,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four five six seven"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (13, 7)
    expected = 3 * INPUT + 10 * CACHE_READ + 7 * OUTPUT
    assert customer_spend_nanos(admin, customer) == expected
    [log] = spend_logs(proxy, admin, customer)
    assert usd_to_nanos(log["spend"]) == expected
    assert upstream.generation_requests()[-1].query == {"alt": "sse"}


def test_a_stream_without_include_usage_has_no_usage_chunk_but_is_still_charged(
    client: openai.OpenAI, admin: httpx.Client
) -> None:
    customer = new_customer(admin)
    chunks = list(
        client.chat.completions.create(
            model="flash", messages=[{"role": "user", "content": "Say hello"}], stream=True, user=customer
        )
    )
    assert all(c.choices for c in chunks)
    assert customer_spend_nanos(admin, customer) == 2 * INPUT + 5 * OUTPUT


def test_a_stream_cut_before_gemini_finished_is_an_error_event_and_charges_the_delivered_text(
    proxy: RunningProxy, client: openai.OpenAI, admin: httpx.Client, upstream: FakeGoogle
) -> None:
    upstream.reply = GeminiReply(text="one two three four five six", chunks=2, cut_after=1)
    customer = new_customer(admin)
    received: list[str] = []
    with pytest.raises(openai.APIError):
        for chunk in client.chat.completions.create(
            model="flash", messages=[{"role": "user", "content": "Count"}], stream=True, user=customer
        ):
            received += [c.delta.content or "" for c in chunk.choices]
    assert "".join(received) == "one two "
    [log] = spend_logs(proxy, admin, customer)
    assert usd_to_nanos(log["spend"]) == customer_spend_nanos(admin, customer) > 0


@pytest.mark.parametrize("stream", [False, True])
def test_tools_round_trip_as_tool_calls_then_function_responses(
    client: openai.OpenAI, upstream: FakeGoogle, stream: bool
) -> None:
    upstream.script(
        GeminiReply(function_calls=({"name": "get_weather", "args": {"city": "Paris", "unit": "C"}},)),
        GeminiReply(text="Sunny in Paris"),
    )
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    if stream:
        chunks = list(
            client.chat.completions.create(model="flash", messages=messages, tools=[WEATHER_TOOL], stream=True)
        )
        deltas = [d for c in chunks if c.choices for d in (c.choices[0].delta.tool_calls or [])]
        assert len(deltas) == 1 and deltas[0].function is not None
        call_id, name, arguments = deltas[0].id, deltas[0].function.name, deltas[0].function.arguments
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    else:
        first = client.chat.completions.create(
            model="flash", messages=messages, tools=[WEATHER_TOOL], tool_choice="required"
        )
        assert first.choices[0].finish_reason == "tool_calls"
        [call] = first.choices[0].message.tool_calls or []
        assert call.type == "function"
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert (name, arguments) == ("get_weather", '{"city":"Paris","unit":"C"}')
    declared = upstream.last_request.json["tools"][0]["functionDeclarations"][0]
    assert declared["parameters"] == {
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"type": "string", "enum": ["C", "F"]}},
        "required": ["city"],
    }
    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": '{"temp": 21}'},
    ]
    second = client.chat.completions.create(model="flash", messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content == "Sunny in Paris"
    contents = upstream.last_request.json["contents"]
    assert contents[1]["parts"] == [{"functionCall": {"name": "get_weather", "args": {"city": "Paris", "unit": "C"}}}]
    assert contents[2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}],
    }


def test_images_and_n_reach_gemini_in_its_format(client: openai.OpenAI, upstream: FakeGoogle) -> None:
    completion = client.chat.completions.create(
        model="vertex-flash",
        n=2,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": PIXEL}},
                    {"type": "image_url", "image_url": {"url": "gs://bucket/photo.png"}},
                ],
            }
        ],
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.choices[1].message.content == "Hello from the fake Gemini. (1)"
    sent = upstream.generation_requests()[-1].json
    assert sent["generationConfig"] == {"candidateCount": 2}
    assert sent["contents"][0]["parts"] == [
        {"text": "Describe"},
        {"inlineData": {"mimeType": "image/png", "data": PIXEL.split(",", 1)[1]}},
        {"fileData": {"mimeType": "image/png", "fileUri": "gs://bucket/photo.png"}},
    ]


def test_json_response_format_asks_gemini_for_json(client: openai.OpenAI, upstream: FakeGoogle) -> None:
    upstream.reply = GeminiReply(text='{"ok": true}')
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    completion = client.chat.completions.create(
        model="flash",
        messages=[{"role": "user", "content": "Answer in JSON"}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}},
    )
    assert completion.choices[0].message.content == '{"ok": true}'
    assert upstream.last_request.json["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "propertyOrdering": ["ok"],
        },
    }


def test_googles_errors_reach_the_sdk_as_its_classes(client: openai.OpenAI, upstream: FakeGoogle) -> None:
    upstream.script(GeminiReply(status=429, error_message="Quota exceeded for gemini-2.5-flash"))
    with pytest.raises(openai.RateLimitError, match="Quota exceeded"):
        client.chat.completions.create(model="flash", messages=[{"role": "user", "content": "hi"}])
    upstream.script(GeminiReply(status=500, error_message="Internal error encountered."))
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="vertex-flash", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    with pytest.raises(openai.BadRequestError, match="logit_bias"):
        client.chat.completions.create(model="flash", messages=[{"role": "user", "content": "hi"}], logit_bias={"1": 2})


def test_config_check_refuses_a_vertex_deployment_without_a_project(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VERTEXAI_PROJECT", raising=False)
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    fake = FakeGoogle()
    account = fake.accounts.create("http://127.0.0.1:1/token", project_id=None)
    params: dict[str, Any] = {"model": "vertex_ai/gemini-2.5-flash", "vertex_credentials": account}
    entry = {"model_name": "v", "litellm_params": params}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(proxy_config([entry])))
    with pytest.raises(ConfigError, match=r"model_list\[0\]\.litellm_params\.vertex_project"):
        load_config(path)
    with_project = fake.accounts.create("http://127.0.0.1:1/token", project_id="from-the-file")
    params["vertex_credentials"] = with_project
    path.write_text(yaml.safe_dump(proxy_config([entry])))
    load_config(path)
