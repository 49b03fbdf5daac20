"""Streams through the proxy: relayed as they arrive, usage injected and stripped, hang-ups and upstream deaths.

Guards the traps DESIGN.md lists for streaming: a buffered relay (the client waits for the whole answer),
the injected `stream_options.include_usage` chunk with empty `choices` that naive clients break on, a client
hang-up that leaves the upstream generating (and billing) into the void, and an upstream that dies mid-stream
leaving the client hanging or the proxy broken.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.e2e_stack import async_client, openai_deployment, proxy_config, sse_payloads, sync_client
from tests.support.fakes import BEHAVIOR_FIELD, FakeOpenAI
from tests.support.proxy import RunningProxy, running_proxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "tell me a story"}]
REPLY = "Hello! This is the fake upstream speaking."


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI) -> Iterator[RunningProxy]:
    config = proxy_config(
        [
            openai_deployment("gpt-4o", openai_server),
            # `timeout` bounds silence, so a stream that keeps sending outlives it.
            openai_deployment("steady", openai_server, upstream_model="gpt-4o", timeout=0.5),
        ]
    )
    with running_proxy(tmp_path_factory.mktemp("streaming"), config) as running:
        yield running


def _behavior(**fields: Any) -> dict[str, Any]:
    """A per-request fake behaviour; the body field crosses the proxy untouched."""
    return {BEHAVIOR_FIELD: fields}


# ---- relay ---------------------------------------------------------------------------------------------


def test_stream_is_relayed_chunk_by_chunk_not_buffered(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    chunk_delay_s = 0.15
    with sync_client(proxy) as client:
        started = time.perf_counter()
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_body=_behavior(chunk_delay_s=chunk_delay_s)
        )
        arrivals = [time.perf_counter() - started for _ in stream]

    # 9 events (role, 7 words, finish) with a pause before each but the first: the stream lasts >= 1.2 s.
    assert len(arrivals) == 9
    assert arrivals[-1] >= 8 * chunk_delay_s
    assert arrivals[0] < arrivals[-1] - 6 * chunk_delay_s, f"first chunk came late: {arrivals}"
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(gap >= chunk_delay_s / 2 for gap in gaps) >= 4, f"chunks arrived in one burst: {gaps}"


async def test_async_stream_is_relayed_chunk_by_chunk(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    chunk_delay_s = 0.15
    async with async_client(proxy) as client:
        started = time.perf_counter()
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_body=_behavior(chunk_delay_s=chunk_delay_s, chunks=4)
        )
        arrivals = [time.perf_counter() - started async for _ in stream]

    assert len(arrivals) == 6
    assert arrivals[0] < arrivals[-1] - 3 * chunk_delay_s, f"first chunk came late: {arrivals}"


def test_finished_streams_end_at_once_and_leave_the_upstream_connection_for_the_next(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    client = sync_client(proxy)
    for _ in range(5):
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == REPLY
    peers = {request.peer for request in openai_upstream.requests[-5:]}
    assert len(peers) == 1, peers  # one kept-alive upstream connection served all five


def test_stream_split_across_arbitrary_tcp_pieces_reaches_the_client_whole(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    long_reply = " ".join(f"word{i}" for i in range(400))
    with sync_client(proxy) as client:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True, extra_body=_behavior(reply=long_reply)
            )
        )

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == long_reply


# ---- usage chunk ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("stream_usage", ["requested", "always"])
def test_injected_usage_chunk_is_stripped_when_client_did_not_ask(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, stream_usage: str
) -> None:
    with sync_client(proxy) as client:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True, extra_body=_behavior(stream_usage=stream_usage)
            )
        )

    assert openai_upstream.last_request.json["stream_options"] == {"include_usage": True}
    assert chunks, "the stream carried content"
    assert all(chunk.choices for chunk in chunks), "a chunk with empty choices reached a client that did not ask"
    assert all(chunk.usage is None for chunk in chunks)


def test_stripped_stream_still_ends_with_done_on_the_wire(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True}
    with httpx.Client(timeout=10) as http:
        response = http.post(proxy.url + "/v1/chat/completions", json=body, headers=proxy.headers())

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.content)
    assert payloads[-1] == "[DONE]"
    assert all(p["choices"] for p in payloads[:-1])
    assert response.content.endswith(b"data: [DONE]\n\n")


async def test_usage_chunk_is_passed_when_the_client_asked(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_body=_behavior(prompt_tokens=11, completion_tokens=22),
        )
        chunks = [chunk async for chunk in stream]

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (11, 22, 33)
    assert sum(chunk.usage is not None for chunk in chunks) == 1


# ---- client hang-up --------------------------------------------------------------------------------------


def test_client_hangup_mid_stream_cancels_the_upstream_at_once(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    slow = _behavior(chunk_delay_s=0.2, reply=" ".join(["word"] * 100))
    with sync_client(proxy) as client:
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_body=slow)
        next(iter(stream))
        hung_up_at = time.perf_counter()
        stream.close()
        openai_upstream.wait_stream_cancelled_sync(timeout_s=1.0)

    assert time.perf_counter() - hung_up_at < 1.0
    assert openai_upstream.stats.streams_completed == 0
    assert openai_upstream.open_streams == 0


async def test_async_client_hangup_mid_stream_cancels_the_upstream_and_proxy_keeps_serving(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    slow = _behavior(chunk_delay_s=0.2, reply=" ".join(["word"] * 100))
    async with async_client(proxy) as client:
        stream = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_body=slow)
        await stream.__anext__()
        await stream.close()
        await openai_upstream.wait_stream_cancelled(timeout_s=1.0)
        reply = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert reply.choices[0].message.content == REPLY


async def test_a_hangup_while_waiting_for_a_whole_answer_cancels_the_upstream_call(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    before = openai_upstream.disconnects
    headers = {"Authorization": f"Bearer {proxy.master_key}"}
    body = {"model": "gpt-4o", "messages": MESSAGES, **_behavior(hang=True)}
    async with httpx.AsyncClient(base_url=proxy.url, headers=headers) as client:
        waiting = asyncio.create_task(client.post("/v1/chat/completions", json=body))
        await openai_upstream.wait_until(lambda s: s.in_flight > 0)
        waiting.cancel()  # the client hangs up before the upstream answered anything
        with pytest.raises(asyncio.CancelledError):
            await waiting
    # The proxy noticed the lost connection and cancelled its upstream call (the fake sees its client go).
    await openai_upstream.wait_disconnected(timeout_s=2.0, count=before + 1)


def test_hangups_leave_no_open_upstream_streams(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    slow = _behavior(chunk_delay_s=0.1, reply=" ".join(["word"] * 100))
    with sync_client(proxy) as client:
        for _ in range(3):
            stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_body=slow)
            next(iter(stream))
            stream.close()
        openai_upstream.wait_stream_cancelled_sync(timeout_s=1.0, count=3)
        openai_upstream.wait_idle_sync(timeout_s=1.0)


# ---- upstream death ---------------------------------------------------------------------------------------


def test_upstream_dying_mid_stream_ends_the_client_stream_with_an_error(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    received: list[str] = []
    with sync_client(proxy) as client:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_body=_behavior(die_after_chunks=3)
        )
        with pytest.raises(openai.APIError) as raised:
            for chunk in stream:
                received.append(chunk.choices[0].delta.content or "")
        reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)

    assert "".join(received) == "Hello! This"  # what arrived before the upstream died was relayed
    assert raised.value.body is not None
    assert reply.choices[0].message.content == REPLY, "the proxy keeps serving after a dead upstream"


async def test_upstream_death_error_event_has_the_openai_envelope(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    body = {"model": "gpt-4o", "messages": MESSAGES, "stream": True, **_behavior(die_after_chunks=2)}
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(proxy.url + "/v1/chat/completions", json=body, headers=proxy.headers())

    payloads = sse_payloads(response.content)
    assert response.status_code == 200  # the headers were sent before the upstream died
    assert len(payloads) == 3
    error = payloads[-1]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "502"
    assert "[DONE]" not in payloads


def test_upstream_dying_before_any_chunk_still_ends_the_stream(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_body=_behavior(die_after_chunks=0)
        )
        with pytest.raises(openai.APIError):
            list(stream)


def test_stream_longer_than_the_timeout_survives_while_chunks_keep_coming(
    proxy: RunningProxy, openai_upstream: FakeOpenAI
) -> None:
    with sync_client(proxy) as client:
        chunks = list(
            client.chat.completions.create(
                model="steady", messages=MESSAGES, stream=True, extra_body=_behavior(chunk_delay_s=0.2, chunks=4)
            )
        )

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY


# ---- hang-up before the first byte ---------------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_client_giving_up_before_the_first_byte_releases_the_upstream(
    proxy: RunningProxy, openai_upstream: FakeOpenAI, stream: bool
) -> None:
    # The upstream takes 3 s to start answering; the client gives up after 0.3 s. CONTRACT §2: a cancelled
    # request is released, not charged, so the proxy must drop the upstream call too, not wait it out.
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key=proxy.master_key, max_retries=0, timeout=0.3) as client:
        with pytest.raises(openai.APITimeoutError):  # a stream times out waiting for its headers, too
            client.chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=stream, extra_body=_behavior(delay_s=3.0)
            )
        gave_up_at = time.perf_counter()
        openai_upstream.wait_disconnected_sync(timeout_s=1.5)

    assert time.perf_counter() - gave_up_at < 1.5
    assert openai_upstream.stats.in_flight == 0


async def test_concurrent_streams_and_calls_do_not_mix_up(proxy: RunningProxy, openai_upstream: FakeOpenAI) -> None:
    async def one(client: openai.AsyncOpenAI, i: int) -> str:
        behaviour = _behavior(reply=f"reply number {i} ends here", chunk_delay_s=0.01)
        if i % 2:
            reply = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_body=behaviour)
            return reply.choices[0].message.content or ""
        stream = await client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True, extra_body=behaviour
        )
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    async with async_client(proxy) as client:
        texts = await asyncio.gather(*(one(client, i) for i in range(24)))

    assert texts == [f"reply number {i} ends here" for i in range(24)]
    assert openai_upstream.stats.streams_completed == 12
