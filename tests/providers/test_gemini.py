"""`gemini/` against the strict fake AI Studio: the key in a header, the body Gemini accepts, answers in OpenAI's
wire format (JSON and SSE, usage chunk only when asked), and Google's errors mapped to ours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from haimaker.errors import BadGatewayError, BadRequestError, UpstreamStatusError
from haimaker.providers.base import Deployment, Route
from haimaker.providers.gemini import GeminiProvider, gemini_models_url
from haimaker.providers.http import HttpTransport
from tests.support.fakes.gemini import FakeGoogle
from tests.support.fakes.gemini_wire import GeminiReply


def make_deployment(fake: FakeGoogle, **overrides: Any) -> Deployment:
    fields: dict[str, Any] = {
        "model_id": "g1",
        "model_name": "flash",
        "provider": "gemini",
        "upstream_model": "gemini-2.5-flash",
        "api_base": fake.url,
        "api_key": fake.api_key,
        "api_version": None,
        "timeout_s": 10.0,
        "stream_timeout_s": None,
        "max_retries": None,
        "region_name": None,
        "price": None,
        "max_output_tokens": None,
    }
    return Deployment(**{**fields, **overrides})


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogle]:
    async with FakeGoogle.running() as server:
        yield server


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    transport = HttpTransport()
    yield transport
    await transport.aclose()


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "flash", "messages": [{"role": "user", "content": "Say hello please"}], **fields}


async def sse(response: Any) -> list[Any]:
    raw = b"".join([piece async for piece in response.iter_chunks()])
    out: list[Any] = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: "):
            data = event[6:]
            out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


async def test_json_answer_is_a_chat_completion_with_gemini_usage(fake: FakeGoogle, transport: HttpTransport) -> None:
    fake.reply = GeminiReply(text="Hi there friend", cached_tokens=2, thought="let me think")
    response = await GeminiProvider(transport).open(make_deployment(fake), Route.CHAT, chat(), False)
    answer = orjson.loads(await response.read())

    request = fake.last_request
    assert request.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == fake.api_key
    assert "key" not in request.query
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {
        "role": "assistant",
        "content": "Hi there friend",
        "reasoning_content": "let me think",
    }
    assert answer["choices"][0]["finish_reason"] == "stop"
    # 3 prompt words + 2 cached (included in promptTokenCount); 3 words of text + 3 of thought.
    assert answer["usage"] == {
        "prompt_tokens": 5,
        "completion_tokens": 6,
        "total_tokens": 11,
        "prompt_tokens_details": {"cached_tokens": 2},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }


async def test_stream_is_openai_chunks_with_the_usage_chunk_when_asked(
    fake: FakeGoogle, transport: HttpTransport
) -> None:
    fake.reply = GeminiReply(text="one two three four five", chunks=2)
    body = chat(stream=True, stream_options={"include_usage": True})
    events = await sse(await GeminiProvider(transport).open(make_deployment(fake), Route.CHAT, body, True))

    request = fake.last_request
    assert request.path == "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
    assert request.query == {"alt": "sse"}
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "one two three four five"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 3
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert all("usage" not in c for c in chunks[:-1])


async def test_stream_without_include_usage_sends_no_usage_chunk(fake: FakeGoogle, transport: HttpTransport) -> None:
    events = await sse(await GeminiProvider(transport).open(make_deployment(fake), Route.CHAT, chat(stream=True), True))
    assert events[-1] == "[DONE]"
    assert all(event == "[DONE]" or event["choices"] for event in events)


async def test_n_asks_candidate_count_and_answers_one_choice_per_candidate(
    fake: FakeGoogle, transport: HttpTransport
) -> None:
    response = await GeminiProvider(transport).open(make_deployment(fake), Route.CHAT, chat(n=3), False)
    answer = orjson.loads(await response.read())
    assert fake.last_request.json["generationConfig"] == {"candidateCount": 3}
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    assert answer["choices"][2]["message"]["content"] == "Hello from the fake Gemini. (2)"

    events = await sse(
        await GeminiProvider(transport).open(make_deployment(fake), Route.CHAT, chat(n=2, stream=True), True)
    )
    texts: dict[int, str] = {}
    for event in events[:-1]:
        for choice in event["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["delta"].get("content", "")
    assert texts == {0: "Hello from the fake Gemini.", 1: "Hello from the fake Gemini. (1)"}


async def test_tool_call_round_trip_is_accepted_by_gemini(fake: FakeGoogle, transport: HttpTransport) -> None:
    fake.reply = GeminiReply(function_calls=({"name": "get_weather", "args": {"city": "Paris"}},))
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}, "unit": {"type": ["string", "null"]}},
                    "required": ["city"],
                    "additionalProperties": False,
                },
                "strict": True,
            },
        }
    ]
    provider = GeminiProvider(transport)
    response = await provider.open(make_deployment(fake), Route.CHAT, chat(tools=tools, tool_choice="auto"), False)
    answer = orjson.loads(await response.read())
    choice = answer["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert call["id"].startswith("call_")

    fake.reply = GeminiReply(text="It is sunny")
    messages = [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21C"},
    ]
    response = await provider.open(make_deployment(fake), Route.CHAT, {"messages": messages, "tools": tools}, False)
    assert orjson.loads(await response.read())["choices"][0]["message"]["content"] == "It is sunny"
    sent = fake.last_request.json
    assert sent["systemInstruction"] == {"parts": [{"text": "Be brief"}]}
    assert sent["contents"][1] == {
        "role": "model",
        "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}],
    }
    assert sent["contents"][2]["parts"][0]["functionResponse"] == {
        "name": "get_weather",
        "response": {"content": "sunny, 21C"},
    }


async def test_a_streamed_tool_call_arrives_whole_with_finish_reason_tool_calls(
    fake: FakeGoogle, transport: HttpTransport
) -> None:
    fake.reply = GeminiReply(function_calls=({"name": "f", "args": {"a": 1}}, {"name": "g", "args": {}}))
    tools = [{"type": "function", "function": {"name": n}} for n in ("f", "g")]
    events = await sse(
        await GeminiProvider(transport).open(make_deployment(fake), Route.CHAT, chat(tools=tools, stream=True), True)
    )
    choice = events[0]["choices"][0]
    assert [(c["index"], c["function"]["name"]) for c in choice["delta"]["tool_calls"]] == [(0, "f"), (1, "g")]
    assert choice["finish_reason"] == "tool_calls"


async def test_images_go_inline_or_by_reference(fake: FakeGoogle, transport: HttpTransport) -> None:
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
    ]
    body = {"messages": [{"role": "user", "content": content}]}
    await (await GeminiProvider(transport).open(make_deployment(fake), Route.CHAT, body, False)).read()
    assert fake.last_request.json["contents"][0]["parts"][1:] == [
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/cat.jpg"}},
    ]


async def test_a_blocked_prompt_is_a_content_filter_choice(fake: FakeGoogle, transport: HttpTransport) -> None:
    fake.reply = GeminiReply(block_reason="SAFETY")
    answer = orjson.loads(
        await (await GeminiProvider(transport).open(make_deployment(fake), Route.CHAT, chat(), False)).read()
    )
    assert answer["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": None},
            "finish_reason": "content_filter",
            "logprobs": None,
        }
    ]


@pytest.mark.parametrize(
    ("status", "error", "our_status", "retryable"),
    [(400, UpstreamStatusError, 400, False), (429, UpstreamStatusError, 429, True), (503, BadGatewayError, 502, True)],
)
async def test_google_errors_are_mapped(
    fake: FakeGoogle, transport: HttpTransport, status: int, error: type[Exception], our_status: int, retryable: bool
) -> None:
    fake.script(GeminiReply(status=status, error_message=f"boom {status}"))
    with pytest.raises(error) as caught:
        await GeminiProvider(transport).open(make_deployment(fake), Route.CHAT, chat(), False)
    assert getattr(caught.value, "status_code", None) == our_status
    assert f"boom {status}" in str(caught.value)
    assert getattr(caught.value, "is_retryable", None) is retryable
    if status == 429:
        assert getattr(caught.value, "error_type", None) == "rate_limit_error"


async def test_a_wrong_key_is_googles_400_and_never_echoes_the_key(fake: FakeGoogle, transport: HttpTransport) -> None:
    wrong = "AIzaSyWrong-key-that-must-not-leak-0000"
    with pytest.raises(UpstreamStatusError) as caught:
        await GeminiProvider(transport).open(make_deployment(fake, api_key=wrong), Route.CHAT, chat(), False)
    assert caught.value.status_code == 400
    assert "API key not valid" in caught.value.message
    assert wrong not in caught.value.message


async def test_non_chat_routes_are_refused(fake: FakeGoogle, transport: HttpTransport) -> None:
    with pytest.raises(BadRequestError, match="chat/completions only"):
        await GeminiProvider(transport).open(make_deployment(fake), Route.EMBEDDINGS, {"input": "x"}, False)
    assert fake.requests == []


def test_api_base_with_a_path_is_used_as_is_and_a_bare_host_gets_v1beta() -> None:
    assert gemini_models_url(None, "m") == "https://generativelanguage.googleapis.com/v1beta/models/m"
    assert gemini_models_url("http://h:1/", "m") == "http://h:1/v1beta/models/m"
    gateway = "https://gateway.ai.cloudflare.com/v1/acct/gw/google-ai-studio/v1beta"
    assert gemini_models_url(gateway, "m") == gateway + "/models/m"


async def test_a_thought_signature_survives_the_round_trip_through_the_client(
    fake: FakeGoogle, transport: HttpTransport
) -> None:
    fake.reply = GeminiReply(function_calls=({"name": "f", "args": {}},), thought_signature="CiQBsig==")
    provider = GeminiProvider(transport)
    tools = [{"type": "function", "function": {"name": "f"}}]
    first = orjson.loads(
        await (await provider.open(make_deployment(fake), Route.CHAT, chat(tools=tools), False)).read()
    )
    call = first["choices"][0]["message"]["tool_calls"][0]
    messages = [
        {"role": "user", "content": "Say hello please"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "ok"},
    ]
    fake.reply = GeminiReply()
    await (await provider.open(make_deployment(fake), Route.CHAT, {"messages": messages, "tools": tools}, False)).read()
    assert fake.last_request.json["contents"][1]["parts"] == [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "CiQBsig=="}
    ]
