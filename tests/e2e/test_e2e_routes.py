"""Every LLM route through the official SDK, sync and async, streaming and not, with and without `/v1`.

Guards the wire compatibility promise: an unmodified OpenAI client pointed at haimaker gets what it would
get from api.openai.com, whether the model is the local `mock/` provider or an `openai/` upstream.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from openai.types.chat import ChatCompletionMessageParam

from haimaker.accounting.tokens import load_encoding
from haimaker.providers.mock import DEFAULT_REPLY
from tests.e2e.e2e_stack import async_client, mock_deployment, openai_deployment, proxy_config, sync_client
from tests.support.fakes import FakeOpenAI
from tests.support.proxy import RunningProxy, running_proxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
MOCK_REPLY = "The quick brown fox jumps over the lazy dog."
MOCK_LATENCY_MS = 300


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI) -> Iterator[RunningProxy]:
    config = proxy_config(
        [
            mock_deployment("gpt-3.5-turbo"),
            mock_deployment("mock-fox", mock_response=MOCK_REPLY),
            mock_deployment("mock-slow", mock_latency_ms=MOCK_LATENCY_MS),
            mock_deployment("mock-embed"),
            openai_deployment("gpt-4o-mini", openai_server),
            openai_deployment("embedder", openai_server, upstream_model="text-embedding-3-small"),
        ]
    )
    with running_proxy(tmp_path_factory.mktemp("routes"), config) as running:
        yield running


def _cl100k_tokens(text: str) -> int:
    return len(load_encoding("cl100k_base").encode_ordinary(text))


# ---- mock provider ---------------------------------------------------------------------------------------


def test_mock_chat_reply_is_deterministic_with_real_token_counts(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client:
        first = client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)
        second = client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)

    assert first.choices[0].message.content == DEFAULT_REPLY == second.choices[0].message.content
    assert first.choices[0].finish_reason == "stop"
    assert first.object == "chat.completion"
    assert first.usage is not None
    # OpenAI bills a single "hi" user message as 8 prompt tokens on gpt-3.5-turbo (3 per message + role +
    # content + 3 priming); the completion is the reply's own cl100k token count.
    assert first.usage.prompt_tokens == 8
    assert first.usage.completion_tokens == _cl100k_tokens(DEFAULT_REPLY)
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens


async def test_mock_chat_through_async_client_uses_configured_reply(proxy: RunningProxy) -> None:
    async with async_client(proxy) as client:
        reply = await client.chat.completions.create(model="mock-fox", messages=MESSAGES)

    assert reply.choices[0].message.content == MOCK_REPLY
    assert reply.usage is not None and reply.usage.completion_tokens == _cl100k_tokens(MOCK_REPLY)


def test_mock_stream_reassembles_the_reply_and_reports_usage_when_asked(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client:
        stream = client.chat.completions.create(
            model="mock-fox", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == MOCK_REPLY
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].choices == []
    assert usage_chunks[0].usage is not None
    assert usage_chunks[0].usage.completion_tokens == _cl100k_tokens(MOCK_REPLY)


async def test_mock_stream_through_async_client(proxy: RunningProxy) -> None:
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(model="mock-fox", messages=MESSAGES, stream=True)
        chunks = [chunk async for chunk in stream]

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == MOCK_REPLY
    assert all(c.choices for c in chunks), "no usage-only chunk unless the client asked for it"


def test_mock_latency_delays_the_answer(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client:
        started = time.perf_counter()
        client.chat.completions.create(model="mock-slow", messages=MESSAGES)
        elapsed_s = time.perf_counter() - started

    assert elapsed_s >= MOCK_LATENCY_MS / 1000


def test_mock_text_completion_streams_and_not(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client:
        whole = client.completions.create(model="mock-fox", prompt="Say something")
        pieces = list(client.completions.create(model="mock-fox", prompt="Say something", stream=True))

    assert whole.object == "text_completion"
    assert whole.choices[0].text == MOCK_REPLY
    assert whole.usage is not None and whole.usage.prompt_tokens == _cl100k_tokens("Say something")
    assert "".join(p.choices[0].text for p in pieces if p.choices) == MOCK_REPLY


def test_mock_embeddings_decode_identically_as_base64_and_float(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client:
        default = client.embeddings.create(model="mock-embed", input=["alpha", "beta"])  # SDK asks for base64
        floats = client.embeddings.create(model="mock-embed", input=["alpha", "beta"], encoding_format="float")

    assert [d.index for d in default.data] == [0, 1]
    assert len(default.data[0].embedding) == 16
    for packed, plain in zip(default.data, floats.data, strict=True):
        assert packed.embedding == pytest.approx(plain.embedding, abs=1e-6)
    assert default.data[0].embedding != default.data[1].embedding
    assert default.usage.prompt_tokens == 2


# ---- openai/ upstream --------------------------------------------------------------------------------------


def test_openai_chat_through_sync_client(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    with sync_client(proxy) as client:
        reply = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert reply.choices[0].message.content == "Hello! This is the fake upstream speaking."
    assert reply.usage is not None and reply.usage.completion_tokens == 7
    assert len(openai_upstream.requests_to("/v1/chat/completions")) == 1


async def test_openai_chat_stream_through_async_client(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        chunks = [chunk async for chunk in stream]

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello! This is the fake upstream speaking."
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_openai_completions_through_async_client(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    async with async_client(proxy) as client:
        whole = await client.completions.create(model="gpt-4o-mini", prompt="one two three")
        stream = await client.completions.create(model="gpt-4o-mini", prompt="one two three", stream=True)
        text = "".join([p.choices[0].text async for p in stream if p.choices])

    assert whole.choices[0].text == text == "Hello! This is the fake upstream speaking."
    assert whole.usage is not None and whole.usage.prompt_tokens == 3


def test_openai_embeddings_default_base64_round_trip(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    with sync_client(proxy) as client:
        default = client.embeddings.create(model="embedder", input="hello world")
        floats = client.embeddings.create(model="embedder", input="hello world", encoding_format="float")

    first, second = openai_upstream.requests_to("/v1/embeddings")
    assert first.json["encoding_format"] == "base64"  # the SDK's default reached the upstream untouched
    assert second.json["encoding_format"] == "float"
    assert len(default.data[0].embedding) == 8
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)


async def test_openai_embeddings_through_async_client(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    async with async_client(proxy) as client:
        result = await client.embeddings.create(model="embedder", input=["a b", "c"])

    assert [len(d.embedding) for d in result.data] == [8, 8]
    assert result.usage.prompt_tokens == 3


# ---- model list and path prefixes --------------------------------------------------------------------------


EXPECTED_MODELS = {"gpt-3.5-turbo", "mock-fox", "mock-slow", "mock-embed", "gpt-4o-mini", "embedder"}


def test_model_list_names_every_configured_model(proxy: RunningProxy) -> None:
    with sync_client(proxy) as client:
        models = client.models.list()

    assert {m.id for m in models.data} == EXPECTED_MODELS
    assert all(m.object == "model" for m in models.data)


async def test_model_list_through_async_client_without_v1_prefix(proxy: RunningProxy) -> None:
    async with async_client(proxy, prefix="") as client:
        models = await client.models.list()

    assert {m.id async for m in models} == EXPECTED_MODELS


@pytest.mark.parametrize("prefix", ["", "/openai", "/openai/v1"])
def test_llm_routes_answer_without_the_v1_prefix(proxy: RunningProxy, prefix: str) -> None:
    with sync_client(proxy, prefix=prefix) as client:
        chat = client.chat.completions.create(model="gpt-3.5-turbo", messages=MESSAGES)
        text = client.completions.create(model="mock-fox", prompt="x")
        embedding = client.embeddings.create(model="mock-embed", input="x")
        streamed = list(client.chat.completions.create(model="mock-fox", messages=MESSAGES, stream=True))

    assert chat.choices[0].message.content == DEFAULT_REPLY
    assert text.choices[0].text == MOCK_REPLY
    assert len(embedding.data[0].embedding) == 16
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == MOCK_REPLY
