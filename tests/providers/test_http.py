"""HttpTransport against real sockets: every transport failure reaches the caller as one of our `UpstreamError`s.

One mapping (`_TransportErrors`) serves the call, the body read and the stream; these tests pin what each phase
turns a timeout, a refused or broken connection, an oversized body and a pool that stayed busy into.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from haimaker.errors import BadGatewayError, GatewayTimeoutError, UpstreamError
from haimaker.providers.http import HttpTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    await reader.readexactly(length)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> str:
        async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await handler(reader, writer)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(guarded, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


@pytest.fixture
async def transport() -> AsyncIterator[HttpTransport]:
    transport = HttpTransport(max_response_bytes=64 * 1024, max_connections_per_origin=1)
    yield transport
    await transport.aclose()


async def _failure(call: Awaitable[object]) -> UpstreamError:
    with pytest.raises(UpstreamError) as raised:
        await call
    return raised.value


async def test_an_upstream_that_does_not_answer_in_time_is_a_504(
    serve: Callable[[Handler], Awaitable[str]], transport: HttpTransport
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        await asyncio.sleep(5)

    url = await serve(handler)
    error = await _failure(transport.post(url, {}, b"{}", timeout_s=0.2))
    assert isinstance(error, GatewayTimeoutError) and error.status_code == 504
    assert error.message == "Upstream did not answer within 0.2s."


async def test_a_refused_connection_is_a_502_naming_the_cause(transport: HttpTransport) -> None:
    error = await _failure(transport.post("http://127.0.0.1:9/v1/x", {}, b"{}", timeout_s=2))
    assert isinstance(error, BadGatewayError) and error.status_code == 502
    assert error.message.startswith("Upstream connection failed: cannot connect to 127.0.0.1:9")


async def test_a_body_past_the_cap_is_a_502(
    serve: Callable[[Handler], Awaitable[str]], transport: HttpTransport
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n" + b"x" * 100_000)
        await writer.drain()

    response = await transport.post(await serve(handler), {}, b"{}", timeout_s=5)
    error = await _failure(response.read())
    assert isinstance(error, BadGatewayError)
    assert error.message == "Upstream response larger than 65536 bytes."


async def test_a_stream_cut_mid_way_is_a_502_that_says_so(
    serve: Callable[[Handler], Awaitable[str]], transport: HttpTransport
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
        await writer.drain()  # and the connection closes without the last chunk

    response = await transport.post(await serve(handler), {}, b"{}", timeout_s=5)
    pieces: list[bytes] = []

    async def consume() -> None:
        async for piece in response.iter_chunks():
            pieces.append(piece)

    error = await _failure(consume())
    assert pieces == [b"data: 1\n\n"]
    assert isinstance(error, BadGatewayError)
    assert error.message.startswith("Upstream connection failed mid-stream: ")


async def test_a_stream_gone_quiet_is_a_504(
    serve: Callable[[Handler], Awaitable[str]], transport: HttpTransport
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    response = await transport.post(await serve(handler), {}, b"{}", timeout_s=0.2)

    async def consume() -> None:
        async for _ in response.iter_chunks():
            pass

    error = await _failure(consume())
    assert isinstance(error, GatewayTimeoutError)
    assert error.message == "Upstream timed out mid-stream."


async def test_every_connection_busy_past_the_timeout_is_a_504_that_names_the_bound(
    serve: Callable[[Handler], Awaitable[str]], transport: HttpTransport
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        await reader.read()

    url = await serve(handler)
    streaming = await transport.post(url, {}, b"{}", timeout_s=5)
    try:
        error = await _failure(transport.post(url, {}, b"{}", timeout_s=0.2))
    finally:
        streaming.close()
    assert isinstance(error, GatewayTimeoutError) and error.status_code == 504
    assert error.message.startswith("No upstream connection was free: all 1 connections to 127.0.0.1:")


async def test_an_upstream_5xx_is_a_502_with_only_declared_attributes(
    serve: Callable[[Handler], Awaitable[str]], transport: HttpTransport
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        body = b'{"error": {"message": "overloaded"}}'
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()

    error = await _failure(transport.post(await serve(handler), {}, b"{}", timeout_s=5))
    assert isinstance(error, BadGatewayError)
    assert error.message == "Upstream error (HTTP 503): overloaded"
    assert not hasattr(error, "upstream_status")
