"""The fake upstreams speak the real wire formats: the official `openai` SDK, pointed straight at them, works.

Also checks the scripting knobs the proxy's end-to-end tests rely on: failures, scripts, per-request overrides,
hangs, streams that die, and the counters that prove a client hang-up reaches the upstream.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.support.fakes import BEHAVIOR_FIELD, Behavior, FakeAzureOpenAI, FakeOpenAI
from tests.support.fakes.behavior import StreamUsage

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "say hello to me"}]


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, timeout=10) as sdk:
        yield sdk


def parse_sse(raw: bytes) -> list[Any]:
    """Split an SSE body into its `data:` payloads (JSON decoded, `[DONE]` kept as a string)."""
    assert raw.endswith(b"\n\n")
    events: list[Any] = []
    for block in raw.split(b"\n\n"):
        if not block:
            continue
        assert block.startswith(b"data: "), block
        data = block[len(b"data: ") :]
        events.append("[DONE]" if data == b"[DONE]" else orjson.loads(data))
    return events


def test_chat_completion_has_openai_shape(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    body = orjson.loads(raw.content)
    completion = raw.parse()

    assert raw.headers["content-type"].startswith("application/json")
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-4o"
    assert body["system_fingerprint"].startswith("fp_")
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": fake.behavior.reply, "refusal": None, "annotations": []},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"]["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4  # words in the prompt
    assert completion.usage.completion_tokens == len(fake.behavior.reply.split())
    assert completion.usage.total_tokens == 4 + len(fake.behavior.reply.split())


def test_requests_are_recorded_with_headers_and_body(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES, user="cust-1")

    recorded = fake.last_request
    assert recorded.method == "POST"
    assert recorded.path == "/v1/chat/completions"
    assert recorded.headers["authorization"] == f"Bearer {fake.api_key}"
    assert recorded.json["user"] == "cust-1"
    assert fake.requests_to("/chat/completions") == [recorded]


def test_reply_and_token_counts_are_configurable(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.behavior = Behavior(reply="one two three", prompt_tokens=11, cached_tokens=5, reasoning_tokens=2)

    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert completion.choices[0].message.content == "one two three"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 3)
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 5


def test_max_tokens_truncates_with_length_finish_and_n_multiplies(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, max_tokens=2, n=2)

    assert [c.finish_reason for c in completion.choices] == ["length", "length"]
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.choices[0].message.content == "Hello! This"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 4


def test_stream_with_include_usage_ends_with_usage_chunk(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.behavior = Behavior(reply="a b c d", chunks=2)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a b c d"
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) == 2
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 4
    stats = fake.wait_until_sync(lambda s: s.streams_completed == 1)  # the handler ends just after the client
    assert stats.open_streams == 0


def test_stream_wire_format_is_sse_with_usage_null_and_done() -> None:
    with FakeOpenAI() as fake, _raw_client() as http:
        raw, headers = http.post_raw(
            fake.base_url + "/chat/completions",
            {"model": "m", "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}},
            fake.api_key,
        )

    assert headers["content-type"].startswith("text/event-stream")
    events = parse_sse(raw)
    assert events[-1] == "[DONE]"
    payloads = events[:-1]
    assert all("usage" in p for p in payloads)
    assert [p["usage"] is None for p in payloads] == [True] * (len(payloads) - 1) + [False]
    assert payloads[-1]["choices"] == []


def test_stream_without_include_usage_has_no_usage(client: openai.OpenAI) -> None:
    with FakeOpenAI() as fake, _raw_client() as http:
        raw, _ = http.post_raw(
            fake.base_url + "/chat/completions", {"model": "m", "messages": MESSAGES, "stream": True}, fake.api_key
        )

    payloads = parse_sse(raw)[:-1]
    assert all("usage" not in p for p in payloads)
    assert all(p["choices"] for p in payloads)


@pytest.mark.parametrize(("stream_usage", "asked", "has_usage"), [("never", True, False), ("always", False, True)])
def test_stream_usage_can_be_ignored_or_forced(stream_usage: StreamUsage, asked: bool, has_usage: bool) -> None:
    with FakeOpenAI(behavior=Behavior(stream_usage=stream_usage)) as fake, _raw_client() as http:
        body: dict[str, Any] = {"model": "m", "messages": MESSAGES, "stream": True}
        if asked:
            body["stream_options"] = {"include_usage": True}
        raw, _ = http.post_raw(fake.base_url + "/chat/completions", body, fake.api_key)

    payloads = parse_sse(raw)[:-1]
    assert any(p.get("usage") for p in payloads) is has_usage


def test_legacy_completions_plain_and_streamed(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    completion = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="once upon a time")
    assert completion.object == "text_completion"
    assert completion.id.startswith("cmpl-")
    assert completion.choices[0].text == fake.behavior.reply
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 4

    chunks = list(
        client.completions.create(
            model="gpt-3.5-turbo-instruct",
            prompt="once upon a time",
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks if c.choices) == fake.behavior.reply
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None


def test_embeddings_float_and_base64_agree(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    # The SDK asks for base64 by default and decodes it; a float request must give the same numbers.
    decoded = client.embeddings.create(model="text-embedding-3-small", input=["alpha beta", "gamma"])
    floats = client.embeddings.create(
        model="text-embedding-3-small", input=["alpha beta", "gamma"], encoding_format="float"
    )

    assert fake.requests[0].json["encoding_format"] == "base64"
    assert [d.index for d in decoded.data] == [0, 1]
    assert decoded.data[0].object == "embedding"
    assert [d.embedding for d in decoded.data] == [d.embedding for d in floats.data]
    assert len(decoded.data[0].embedding) == fake.embedding_dimensions
    assert decoded.usage.prompt_tokens == decoded.usage.total_tokens == 3


def test_embeddings_base64_is_float32_little_endian() -> None:
    with FakeOpenAI() as fake, _raw_client() as http:
        raw, _ = http.post_raw(
            fake.base_url + "/embeddings",
            {"model": "e", "input": "x", "encoding_format": "base64", "dimensions": 4},
            fake.api_key,
        )
    encoded = orjson.loads(raw)["data"][0]["embedding"]
    assert isinstance(encoded, str)
    assert len(struct.unpack("<4f", base64.b64decode(encoded))) == 4


def test_models_are_listed_with_and_without_v1_prefix(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    models = client.models.list()
    assert "gpt-4o" in [m.id for m in models.data]
    with _raw_client() as http:
        raw, _ = http.get_raw(fake.url + "/models", fake.api_key)
    assert orjson.loads(raw)["object"] == "list"


def test_no_prefix_chat_route_works(fake: FakeOpenAI) -> None:
    with openai.OpenAI(base_url=fake.url, api_key=fake.api_key, max_retries=0) as sdk:
        completion = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.choices[0].message.content == fake.behavior.reply
    assert fake.last_request.path == "/chat/completions"


def test_wrong_key_gets_openai_401_naming_the_key(fake: FakeOpenAI) -> None:
    with (
        openai.OpenAI(base_url=fake.base_url, api_key="sk-wrong-key-123456", max_retries=0) as sdk,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"
    assert "sk-wrong-key-123456" in caught.value.message


def test_missing_key_gets_401() -> None:
    with FakeOpenAI() as fake, _raw_client() as http:
        status, body = http.post_json(fake.base_url + "/chat/completions", {"model": "m", "messages": []}, None)
    assert status == 401
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_api_key_none_accepts_anything() -> None:
    with FakeOpenAI(api_key=None) as fake, _raw_client() as http:
        status, _ = http.post_json(fake.base_url + "/chat/completions", {"model": "m", "messages": MESSAGES}, None)
    assert status == 200


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_failures_carry_openai_error_bodies(
    fake: FakeOpenAI, client: openai.OpenAI, status: int, error_class: type[openai.APIStatusError]
) -> None:
    fake.behavior = Behavior.failing(status, headers={"retry-after": "3"})

    with pytest.raises(error_class) as caught:
        client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert caught.value.status_code == status
    assert caught.value.response.headers["retry-after"] == "3"
    body = caught.value.body
    assert isinstance(body, dict)
    assert set(body) == {"message", "type", "param", "code"}


def test_script_runs_in_order_then_falls_back_to_default(fake: FakeOpenAI) -> None:
    fake.script(Behavior.failing(503), Behavior(reply="second"))
    with openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=1) as sdk:
        first = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        second = sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert first.choices[0].message.content == "second"  # the SDK retried the 503
    assert second.choices[0].message.content == fake.behavior.reply
    assert len(fake.requests) == 3
    assert fake.scripted_remaining == 0


def test_model_behavior_applies_only_to_that_model(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.set_model_behavior("broken", Behavior.failing(500))

    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="broken", messages=MESSAGES)
    assert client.chat.completions.create(model="gpt-4o", messages=MESSAGES).choices


def test_per_request_override_in_body_and_header(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    via_body = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        extra_body={BEHAVIOR_FIELD: {"reply": "from the body"}},
    )
    via_header = client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        extra_headers={"X-Fake-Behavior": '{"reply": "from the header"}'},
    )
    assert via_body.choices[0].message.content == "from the body"
    assert via_header.choices[0].message.content == "from the header"


def test_unknown_override_field_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="unknown fake behaviour"):
        client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            extra_body={BEHAVIOR_FIELD: {"no_such_field": 1}},
        )


def test_models_restriction_gives_model_not_found() -> None:
    with (
        FakeOpenAI(models=["gpt-4o"]) as fake,
        openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0) as sdk,
        pytest.raises(openai.NotFoundError) as caught,
    ):
        sdk.chat.completions.create(model="gpt-5", messages=MESSAGES)
    assert caught.value.code == "model_not_found"


def test_missing_messages_is_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="messages"):
        client.chat.completions.create(model="gpt-4o", messages=openai.omit)  # type: ignore[call-overload]


def test_delay_holds_the_response(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.behavior = Behavior(delay_s=0.2)
    started = time.monotonic()
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert time.monotonic() - started >= 0.2


def test_hang_times_out_the_client_and_counts_the_disconnect(fake: FakeOpenAI) -> None:
    fake.behavior = Behavior.hanging()
    with (
        openai.OpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0, timeout=0.3) as sdk,
        pytest.raises(openai.APITimeoutError),
    ):
        sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    stats = fake.wait_disconnected_sync(5.0)
    assert stats.in_flight == 0


def test_stream_dies_after_k_events(fake: FakeOpenAI, client: openai.OpenAI) -> None:
    fake.behavior = Behavior.dying_after(3)
    received: list[Any] = []
    with pytest.raises(openai.APIError):  # the SDK surfaces the broken chunked body as a connection error
        for chunk in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
            received.append(chunk)

    assert len(received) == 3
    stats = fake.wait_until_sync(lambda s: s.streams_killed == 1)
    assert stats.open_streams == 0


async def test_async_fake_counts_a_client_that_hangs_up_mid_stream() -> None:
    async with FakeOpenAI.running(behavior=Behavior(chunks=50, chunk_delay_s=0.02)) as fake:
        async with aiohttp.ClientSession() as session:
            response = await session.post(
                fake.base_url + "/chat/completions",
                json={"model": "m", "messages": MESSAGES, "stream": True},
                headers={"Authorization": f"Bearer {fake.api_key}"},
            )
            await response.content.readuntil(b"\n\n")
            assert fake.open_streams == 1
            response.close()  # drop the connection mid-stream

            stats = await fake.wait_stream_cancelled(5.0)

        assert stats.open_streams == 0
        assert stats.streams_completed == 0
        assert stats.disconnects == 1


async def test_async_sdk_against_running_fake() -> None:
    async with (
        FakeOpenAI.running() as fake,
        openai.AsyncOpenAI(base_url=fake.base_url, api_key=fake.api_key, max_retries=0) as sdk,
    ):
        completion = await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES)
        stream = await sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert completion.choices[0].message.content == "".join(pieces)


async def test_blocking_wait_on_the_fakes_own_loop_is_refused() -> None:
    async with FakeOpenAI.running() as fake:
        with pytest.raises(RuntimeError, match="await"):
            fake.wait_idle_sync(0.1)


async def test_stop_cancels_hanging_handlers_quickly() -> None:
    fake = FakeOpenAI(behavior=Behavior.hanging())
    await fake.start()
    async with aiohttp.ClientSession() as session:
        pending = asyncio.ensure_future(
            session.post(
                fake.base_url + "/chat/completions",
                json={"model": "m", "messages": MESSAGES},
                headers={"Authorization": f"Bearer {fake.api_key}"},
            )
        )
        await fake.wait_until(lambda s: s.in_flight == 1)
        started = time.monotonic()
        await fake.stop()
        assert time.monotonic() - started < 1.0
        with pytest.raises(aiohttp.ClientError):
            await pending
    assert fake.disconnects == 0  # stopping is not a client hang-up


# ---- Azure ---------------------------------------------------------------------------------------------------


@pytest.fixture
def azure() -> Iterator[FakeAzureOpenAI]:
    with FakeAzureOpenAI(deployments={"my-gpt": "gpt-4o-2024-08-06", "my-embed": "text-embedding-3-small"}) as server:
        yield server


def azure_client(azure: FakeAzureOpenAI, api_key: str | None = None) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=azure.azure_endpoint,
        api_key=api_key or azure.api_key,
        api_version="2024-10-21",
        max_retries=0,
    )


def test_azure_chat_uses_deployment_path_and_api_key_header(azure: FakeAzureOpenAI) -> None:
    with azure_client(azure) as sdk:
        completion = sdk.chat.completions.create(model="my-gpt", messages=MESSAGES)

    assert completion.model == "gpt-4o-2024-08-06"
    assert completion.choices[0].message.content == azure.behavior.reply
    recorded = azure.last_request
    assert recorded.path == "/openai/deployments/my-gpt/chat/completions"
    assert recorded.query["api-version"] == "2024-10-21"
    assert recorded.headers["api-key"] == azure.api_key
    body = recorded.json
    assert body["model"] == "my-gpt"


def test_azure_stream_opens_with_prompt_filter_chunk(azure: FakeAzureOpenAI) -> None:
    with azure_client(azure) as sdk:
        chunks = list(
            sdk.chat.completions.create(
                model="my-gpt",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert chunks[0].choices == []
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == azure.behavior.reply
    assert chunks[-1].usage is not None


def test_azure_embeddings(azure: FakeAzureOpenAI) -> None:
    with azure_client(azure) as sdk:
        result = sdk.embeddings.create(model="my-embed", input="hello")
    assert len(result.data[0].embedding) == azure.embedding_dimensions


def test_azure_wrong_key_gets_azure_401(azure: FakeAzureOpenAI) -> None:
    with azure_client(azure, api_key="wrong") as sdk, pytest.raises(openai.AuthenticationError) as caught:
        sdk.chat.completions.create(model="my-gpt", messages=MESSAGES)
    assert caught.value.status_code == 401
    assert isinstance(caught.value.body, dict)
    assert set(caught.value.body) == {"code", "message"}
    assert caught.value.body["code"] == "401"


def test_azure_unknown_deployment_is_404(azure: FakeAzureOpenAI) -> None:
    with azure_client(azure) as sdk, pytest.raises(openai.NotFoundError) as caught:
        sdk.chat.completions.create(model="nope", messages=MESSAGES)
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["code"] == "DeploymentNotFound"


def test_azure_api_version_missing_is_404_and_unknown_is_400(azure: FakeAzureOpenAI) -> None:
    url = azure.deployment_url("my-gpt") + "/chat/completions"
    headers = {"api-key": azure.api_key or ""}
    with _raw_client() as http:
        missing, missing_body = http.post_json(url, {"messages": MESSAGES}, None, headers)
        unknown, unknown_body = http.post_json(url + "?api-version=1999-01-01", {"messages": MESSAGES}, None, headers)
    assert (missing, missing_body["error"]["code"]) == (404, "404")
    assert (unknown, unknown_body["error"]["code"]) == (400, "BadRequest")


# ---- a tiny blocking HTTP client for raw wire checks (runs aiohttp on a private loop) -------------------------


class _RawClient:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._session = self._loop.run_until_complete(self._open())

    async def _open(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession()

    def close(self) -> None:
        self._loop.run_until_complete(self._session.close())
        self._loop.close()

    def post_raw(self, url: str, body: dict[str, Any], key: str | None) -> tuple[bytes, dict[str, str]]:
        status, raw, headers = self._loop.run_until_complete(self._request("POST", url, body, key, {}))
        assert status == 200, raw
        return raw, headers

    def get_raw(self, url: str, key: str | None) -> tuple[bytes, dict[str, str]]:
        status, raw, headers = self._loop.run_until_complete(self._request("GET", url, None, key, {}))
        assert status == 200, raw
        return raw, headers

    def post_json(
        self, url: str, body: dict[str, Any], key: str | None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        status, raw, _ = self._loop.run_until_complete(self._request("POST", url, body, key, headers or {}))
        return status, orjson.loads(raw)

    async def _request(
        self, method: str, url: str, body: dict[str, Any] | None, key: str | None, headers: dict[str, str]
    ) -> tuple[int, bytes, dict[str, str]]:
        all_headers = dict(headers)
        if key is not None:
            all_headers["Authorization"] = f"Bearer {key}"
        async with self._session.request(method, url, json=body, headers=all_headers) as response:
            raw = await response.read()
            return response.status, raw, {k.lower(): v for k, v in response.headers.items()}


class _RawClientContext:
    def __enter__(self) -> _RawClient:
        self._client = _RawClient()
        return self._client

    def __exit__(self, *exc: object) -> None:
        self._client.close()


def _raw_client() -> _RawClientContext:
    return _RawClientContext()
