"""The Anthropic provider's stream translation (Anthropic events in any piece sizes → OpenAI chunks) and its URL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from haimaker.errors import BadGatewayError, BadRequestError, UpstreamStatusError
from haimaker.providers.anthropic import AnthropicProvider, AnthropicStreamTranslator, messages_url
from haimaker.providers.base import Deployment, Route
from haimaker.providers.http import HttpTransport
from haimaker.providers.sse import DEFAULT_MAX_EVENT_BYTES, SSETap
from tests.support.fakes import Behavior, FakeUpstream
from tests.support.fakes.anthropic import FakeAnthropic, stream_events

MESSAGE: dict[str, Any] = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-3-5-sonnet-20241022",
    "content": [
        {"type": "text", "text": "Let me check the weather."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "output_tokens": 12,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 5,
    },
}


def payloads(raw: bytes) -> list[Any]:
    out: list[Any] = []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: "):
            data = event[6:]
            out.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return out


def translated(raw: bytes, piece: int, **kwargs: Any) -> bytes:
    translator = AnthropicStreamTranslator("claude", include_usage=True, **kwargs)
    out = b"".join(translator.feed(raw[i : i + piece]) for i in range(0, len(raw), piece))
    return out + translator.flush()


@pytest.mark.parametrize("piece", [1, 7, 10_000])
def test_a_stream_becomes_openai_chunks_with_tool_deltas_usage_and_done(piece: int) -> None:
    raw = b"".join(stream_events(MESSAGE, Behavior()))
    chunks = payloads(translated(raw.replace(b"\n", b"\r\n"), piece))
    assert chunks[-1] == "[DONE]"
    *body, usage_chunk, _ = chunks
    assert all(c["id"] == "chatcmpl-01" and c["object"] == "chat.completion.chunk" for c in body)
    assert body[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in body)
    assert text == "Let me check the weather."
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in body if "tool_calls" in c["choices"][0]["delta"]]
    assert calls[0] == {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert "".join(c["function"]["arguments"] for c in calls) == '{"city":"Paris"}'
    assert all(c["index"] == 0 for c in calls)
    assert [c["choices"][0]["finish_reason"] for c in body][-1] == "tool_calls"
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 115,
        "completion_tokens": 12,
        "total_tokens": 127,
        "prompt_tokens_details": {"cached_tokens": 100},
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 100,
    }


def test_the_pipelines_tap_reads_the_translated_usage_and_finish() -> None:
    tap = SSETap(keep_usage_chunk=False)
    out = tap.feed(translated(b"".join(stream_events(MESSAGE, Behavior())), 50))
    assert tap.finished and tap.saw_finish_reason
    assert tap.parsed_usage is not None
    assert (tap.parsed_usage.prompt_tokens, tap.parsed_usage.completion_tokens) == (115, 12)
    assert b'"choices":[]' not in out  # the usage chunk the client did not ask for is dropped by the tap


def test_without_include_usage_there_is_no_usage_chunk() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=False)
    chunks = payloads(translator.feed(b"".join(stream_events(MESSAGE, Behavior()))))
    assert chunks[-1] == "[DONE]" and not any(isinstance(c, dict) and "usage" in c for c in chunks)


def test_an_error_event_becomes_an_openai_error_event_and_ends_the_stream_without_done() -> None:
    behavior = Behavior(stream_error={"type": "overloaded_error", "message": "Overloaded"})
    chunks = payloads(translated(b"".join(stream_events(MESSAGE, behavior)), 64))
    assert chunks[-1] == {"error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": "503"}}
    assert "[DONE]" not in chunks


def test_a_cut_stream_has_no_done() -> None:
    raw = b"".join(list(stream_events(MESSAGE, Behavior()))[:4])
    assert "[DONE]" not in payloads(translated(raw, 16))


def test_an_unreadable_event_is_a_502() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=True)
    with pytest.raises(BadGatewayError):
        translator.feed(b"event: message_start\ndata: {not json\n\n")


def test_thinking_deltas_become_reasoning_content() -> None:
    raw = (
        b'data: {"type":"message_start","message":{"id":"msg_2","usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
        b'data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}\n\n'
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Hmm."}}\n\n'
        b'data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"x"}}\n\n'
    )
    chunks = payloads(translated(raw, 1000))
    assert chunks[-1]["choices"][0]["delta"] == {"reasoning_content": "Hmm."}


@pytest.mark.parametrize(
    ("base", "url"),
    [
        (None, "https://api.anthropic.com/v1/messages"),
        ("https://gw.example.com/", "https://gw.example.com/v1/messages"),
        ("https://gw.example.com/anthropic/v1/messages", "https://gw.example.com/anthropic/v1/messages"),
    ],
)
def test_the_messages_url_appends_v1_messages_unless_present(base: str | None, url: str) -> None:
    assert messages_url(base) == url


def test_an_error_event_before_the_message_starts_is_held_as_the_opening_error() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=True)
    raw = b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    assert translator.feed(raw) == b""
    assert translator.opening_error == (529, {"type": "overloaded_error", "message": "Overloaded"})


# ---- the translator's less common events ---------------------------------------------------------------------


def event(payload: dict[str, Any]) -> bytes:
    return b"event: " + str(payload["type"]).encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


START = event({"type": "message_start", "message": {"id": "msg_7", "model": "claude-x", "usage": {"input_tokens": 4}}})
STOP = event({"type": "message_stop"})


def test_a_response_format_tool_streams_as_content_and_finishes_as_stop() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=True, json_text=True)
    raw = b"".join(
        [
            START,
            event(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "tool_use", "id": "t", "name": "json_tool_call", "input": {}},
                }
            ),
            event(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
                }
            ),
            event(
                {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "1}"}}
            ),
            event({"type": "content_block_stop", "index": 0}),
            event({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 3}}),
            STOP,
        ]
    )
    chunks = payloads(translator.feed(raw))
    deltas = [c["choices"][0]["delta"] for c in chunks if isinstance(c, dict) and c["choices"]]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": '{"a":'}, {"content": "1}"}, {}]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:4]] == [None, None, None, "stop"]
    assert chunks[0]["id"] == "chatcmpl-7" and chunks[0]["model"] == "claude-x"
    assert chunks[4]["usage"]["prompt_tokens"] == 4 and chunks[4]["usage"]["completion_tokens"] == 3
    assert chunks[5] == "[DONE]"


def test_a_text_block_that_starts_with_text_sends_it_and_malformed_blocks_send_nothing() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=False)
    raw = b"".join(
        [
            event({"type": "message_start", "message": "not an object"}),
            event({"type": "content_block_start", "content_block": {"type": "text", "text": "orphan"}}),
            event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "Hel"}}),
            event({"type": "content_block_delta", "index": 0, "delta": "lo"}),
            event(
                {"type": "content_block_delta", "index": 5, "delta": {"type": "input_json_delta", "partial_json": "{"}}
            ),
            event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}}),
            event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
            STOP,
        ]
    )
    chunks = payloads(translator.feed(raw))
    assert chunks[0]["id"] == "chatcmpl-unknown" and chunks[0]["model"] == "claude"
    assert [c["choices"][0]["delta"] for c in chunks[:-1]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1] == "[DONE]"


def test_nothing_is_translated_after_the_stream_ended() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=False)
    first = translator.feed(START + STOP + event({"type": "content_block_delta", "index": 0, "delta": {}}) + b"\n\n")
    assert payloads(first)[-1] == "[DONE]"
    text = event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "late"}})
    assert translator.feed(text) == b""
    assert translator.flush() == b""


def test_comments_and_event_lines_alone_carry_nothing_and_the_last_unterminated_event_is_flushed() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=False)
    assert translator.feed(b": keep-alive\n\nevent: ping\n\n") == b""
    [opening] = payloads(translator.feed(event({"type": "message_start", "message": {"id": "msg_8"}})))
    assert opening["id"] == "chatcmpl-8" and opening["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert translator.feed(STOP.rstrip(b"\n")) == b""  # no blank line after it: not known to be whole yet
    assert payloads(translator.flush()) == ["[DONE]"]


def test_an_event_that_is_not_an_object_is_a_502() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=True)
    with pytest.raises(BadGatewayError) as caught:
        translator.feed(b"data: [1, 2]\n\n")
    assert caught.value.message == "Upstream sent a stream event that is not an object."


def test_an_event_past_the_size_cap_is_a_502_before_it_ends() -> None:
    translator = AnthropicStreamTranslator("claude", include_usage=True)
    assert translator.feed(b"data: " + b"x" * (DEFAULT_MAX_EVENT_BYTES - 6)) == b""  # at the cap: held
    with pytest.raises(BadGatewayError) as caught:
        translator.feed(b"x")
    assert caught.value.message == f"Upstream sent a stream event larger than {DEFAULT_MAX_EVENT_BYTES} bytes."


# ---- the provider against the strict fake Anthropic (in-process, no proxy) ------------------------------------

DEPLOYMENT_KEY = "sk-ant-deployment-key-0123456789abcdef"


def make_deployment(fake: FakeUpstream, **overrides: Any) -> Deployment:
    fields: dict[str, Any] = {
        "model_id": "a1",
        "model_name": "claude",
        "provider": "anthropic",
        "upstream_model": "claude-3-5-sonnet-20241022",
        "api_base": fake.url,
        "api_key": None,
        "api_version": None,
        "timeout_s": 10.0,
        "stream_timeout_s": None,
        "max_retries": None,
        "region_name": None,
        "price": None,
        "max_output_tokens": None,
        "params": {},
    }
    return Deployment(**{**fields, **overrides})


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "claude", "messages": [{"role": "user", "content": "Say hello please"}], **fields}


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    transport = HttpTransport()
    yield transport
    await transport.aclose()


@pytest.mark.parametrize("route", [Route.COMPLETIONS, Route.EMBEDDINGS, Route.RESPONSES])
async def test_routes_other_than_chat_are_refused_before_any_call(route: Route, transport: HttpTransport) -> None:
    async with FakeAnthropic.running() as fake:
        with pytest.raises(BadRequestError) as caught:
            await AnthropicProvider(transport).open(make_deployment(fake), route, chat(), False)
        assert caught.value.param == "model"
        assert caught.value.message == f"anthropic/ deployments serve chat completions only, not /{route.value}."
        assert fake.requests == []


async def test_extra_headers_are_sent_and_no_key_means_no_x_api_key(transport: HttpTransport) -> None:
    async with FakeAnthropic.running(api_key=None) as fake:
        deployment = make_deployment(fake, params={"extra_headers": {"anthropic-beta": "prompt-caching-2024-07-31"}})
        response = await AnthropicProvider(transport).open(deployment, Route.CHAT, chat(), False)
        try:
            [whole] = [piece async for piece in response.iter_chunks()]
            assert response.at_end()
        finally:
            response.close()
    headers = fake.last_request.headers
    assert headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert "x-api-key" not in headers
    answer = orjson.loads(whole)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": Behavior().reply}


async def test_a_2xx_answer_that_is_not_a_message_is_a_502(transport: HttpTransport) -> None:
    behavior = Behavior(status=200, error_body={"type": "completion", "completion": "Hi"})
    async with FakeAnthropic.running(api_key=None, behavior=behavior) as fake:
        response = await AnthropicProvider(transport).open(make_deployment(fake), Route.CHAT, chat(), False)
        try:
            with pytest.raises(BadGatewayError) as caught:
                await response.read()
        finally:
            response.close()
    assert caught.value.message == "Upstream answer is not an Anthropic message."


async def test_a_stream_with_the_deployments_own_key_is_read_whole_once(transport: HttpTransport) -> None:
    async with FakeAnthropic.running(api_key=DEPLOYMENT_KEY, behavior=Behavior(completion_tokens=9)) as fake:
        deployment = make_deployment(fake, api_key=DEPLOYMENT_KEY)
        body = chat(stream=True, stream_options={"include_usage": True})
        response = await AnthropicProvider(transport).open(deployment, Route.CHAT, body, True)
        try:
            chunks = payloads(await response.read())
            assert await response.read() == b""  # relayed once: nothing is replayed
            assert response.at_end()
        finally:
            response.close()
    assert fake.last_request.headers["x-api-key"] == DEPLOYMENT_KEY
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks[:-2]) == Behavior().reply
    assert chunks[-2]["usage"]["completion_tokens"] == 9
    assert chunks[-1] == "[DONE]"


class VerbatimAnthropic(FakeUpstream):
    """An upstream at `/v1/messages` that answers 200 with `body` as it is (what the strict fake never sends)."""

    def __init__(self, *, body: bytes, content_type: str) -> None:
        super().__init__(api_key=None)
        self.body = body
        self.content_type = content_type

    def _routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/messages", self._answer)]

    async def _answer(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200, body=self.body, headers={"content-type": self.content_type})


async def test_a_2xx_answer_that_is_not_json_is_a_502(transport: HttpTransport) -> None:
    async with VerbatimAnthropic.running(body=b"<html>gateway</html>", content_type="text/html") as fake:
        deployment = make_deployment(fake)
        response = await AnthropicProvider(transport).open(deployment, Route.CHAT, chat(), False)
        try:
            with pytest.raises(BadGatewayError) as caught:
                await response.read()
        finally:
            response.close()
    assert caught.value.message == "Upstream answer is not JSON."


async def test_a_stream_whose_last_event_has_no_blank_line_still_ends_with_done(transport: HttpTransport) -> None:
    body = START + event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}) + STOP.rstrip(b"\n")
    async with VerbatimAnthropic.running(body=body, content_type="text/event-stream") as fake:
        deployment = make_deployment(fake)
        response = await AnthropicProvider(transport).open(deployment, Route.CHAT, chat(stream=True), True)
        try:
            chunks = payloads(await response.read())
        finally:
            response.close()
    assert [c if c == "[DONE]" else c["choices"][0]["finish_reason"] for c in chunks] == [None, "stop", "[DONE]"]


async def test_an_error_event_before_the_message_is_raised_as_the_status_it_stands_for(
    transport: HttpTransport,
) -> None:
    overloaded = Behavior(stream_error={"type": "overloaded_error", "message": "Overloaded"}, die_after_chunks=0)
    limited = Behavior(stream_error={"type": "rate_limit_error", "message": "Slow down"}, die_after_chunks=0)
    async with FakeAnthropic.running(api_key=None) as fake:
        provider = AnthropicProvider(transport)
        fake.behavior = overloaded
        with pytest.raises(BadGatewayError) as caught:
            await provider.open(make_deployment(fake), Route.CHAT, chat(stream=True), True)
        assert caught.value.message == "Upstream error (HTTP 529): Overloaded"
        fake.behavior = limited
        with pytest.raises(UpstreamStatusError) as refused:
            await provider.open(make_deployment(fake), Route.CHAT, chat(stream=True), True)
        assert (refused.value.status_code, refused.value.message, refused.value.is_retryable) == (
            429,
            "Slow down",
            True,
        )
