"""Http1Client against real sockets: coalesced streaming reads, keep-alive reuse, timeouts, and webhook posts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from haimaker.providers.http import post_json
from haimaker.providers.http1 import BodyTooLarge, Http1Client, TransportError, TransportTimeout

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return head + await reader.readexactly(length)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Server:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1/chat/completions"


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[Server]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> Server:
        server = Server(handler)
        server.server = await asyncio.start_server(server._serve, "127.0.0.1", 0)
        servers.append(server.server)
        return server

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def test_events_that_arrive_together_are_relayed_as_one_piece(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    events = [b'data: {"n": %d}\n\n' % index for index in range(20)] + [b"data: [DONE]\n\n"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        # Every event its own HTTP chunk, all in one write: what a fast upstream's socket delivers.
        writer.write(head + b"".join(_chunk(event) for event in events) + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await serve(handler)
    client = Http1Client()
    try:
        response = await client.post(server.url, {}, b"{}", timeout_s=5)
        pieces = [piece async for piece in response.iter_chunks()]
    finally:
        client.close()
    assert b"".join(pieces) == b"".join(events)
    assert len(pieces) < len(events) / 2  # one downstream write per socket read, not one per event


async def test_a_complete_response_leaves_its_connection_for_the_next_request(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    server = await serve(handler)
    client = Http1Client()
    try:
        for _ in range(3):
            response = await client.post(server.url, {}, b"{}", timeout_s=5)
            assert await response.read() == b"ok"
    finally:
        client.close()
    assert server.connections == 1


async def test_silence_past_the_timeout_is_a_transport_timeout(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    server = await serve(handler)
    client = Http1Client()
    try:
        with pytest.raises(TransportTimeout):
            await client.post(server.url, {}, b"{}", timeout_s=0.2)
    finally:
        client.close()


async def test_a_stream_that_goes_quiet_times_out_between_pieces(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + _chunk(b"data: 1\n\n"))
        await writer.drain()
        await asyncio.sleep(5)

    server = await serve(handler)
    client = Http1Client()
    try:
        response = await client.post(server.url, {}, b"{}", timeout_s=0.2)
        chunks = response.iter_chunks()
        assert await chunks.__anext__() == b"data: 1\n\n"
        with pytest.raises(TransportTimeout):
            await chunks.__anext__()
    finally:
        client.close()


async def test_a_refused_connection_is_a_transport_error() -> None:
    client = Http1Client()
    try:
        with pytest.raises(TransportError):
            await client.post("http://127.0.0.1:9/x", {}, b"{}", timeout_s=2)
    finally:
        client.close()


async def test_post_json_reports_the_answer_and_never_raises(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await _read_request(reader))
        writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
        await writer.drain()

    server = await serve(handler)
    assert await post_json(server.url, {"event": "budget_crossed"}, timeout_s=2) is True
    assert received[0].endswith(b'{"event":"budget_crossed"}')
    assert b"Content-Type: application/json" in received[0]
    assert await post_json("http://127.0.0.1:9/hook", {"x": 1}, timeout_s=2) is False


# ---- bounded memory (issue 10, finding 6) ------------------------------------------------------------------


async def test_a_body_past_the_cap_is_refused_and_its_connection_closed(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    sent = 0
    gone = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        try:
            for _ in range(200):  # 200 MB unless the client gives up
                writer.write(_chunk(b"x" * (1024 * 1024)))
                await writer.drain()
                sent += 1
        except ConnectionError:
            gone.set()

    server = await serve(handler)
    client = Http1Client()
    try:
        response = await client.post(server.url, {}, b"{}", timeout_s=5)
        with pytest.raises(BodyTooLarge):
            await response.read(max_bytes=4 * 1024 * 1024)
        await asyncio.wait_for(gone.wait(), 5)
    finally:
        client.close()
    assert sent < 50, "the client stopped reading soon after the cap"


async def test_an_announced_length_past_the_cap_is_refused_before_reading(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\n{")
        await writer.drain()
        await reader.read()

    server = await serve(handler)
    client = Http1Client()
    try:
        response = await client.post(server.url, {}, b"{}", timeout_s=5)
        with pytest.raises(BodyTooLarge):
            await response.read(max_bytes=1024)
    finally:
        client.close()


async def test_a_body_within_the_cap_is_read_whole(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabcd")
        await writer.drain()

    server = await serve(handler)
    client = Http1Client()
    try:
        response = await client.post(server.url, {}, b"{}", timeout_s=5)
        assert await response.read(max_bytes=4) == b"abcd"
    finally:
        client.close()


async def test_a_consumer_that_does_not_read_pauses_the_socket_instead_of_buffering_the_stream(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    sent = 0
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        for _ in range(64):
            writer.write(_chunk(b"data: " + b"y" * (1024 * 1024) + b"\n\n"))
            await writer.drain()
            sent += 1
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        await release.wait()

    server = await serve(handler)
    client = Http1Client()
    try:
        response = await client.post(server.url, {}, b"{}", timeout_s=5)
        chunks = response.iter_chunks()
        await chunks.__anext__()
        await asyncio.sleep(0.3)  # a slow client: the upstream keeps writing meanwhile
        assert sent < 32, "reading stopped once the buffer held about a megabyte (plus the sockets' buffers)"
        total = 0
        async for piece in chunks:
            total += len(piece)
        assert sent == 64 and total > 60 * 1024 * 1024, "reading resumed: the whole stream arrived"
    finally:
        release.set()
        client.close()


async def test_a_webhook_answering_a_huge_body_is_not_read_whole(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 500000000\r\n\r\n")
        await writer.drain()
        await reader.read()

    server = await serve(handler)
    assert await post_json(server.url, {"event": "x"}, timeout_s=2) is True
