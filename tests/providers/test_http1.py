"""Http1Client against real sockets: coalesced streaming reads, keep-alive reuse and its stale-socket retry,
`Connection: close`, bodies that end at EOF, timeouts, the per-origin connection bound, TLS to a private CA,
back-pressure, and webhook posts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from haimaker.providers.http import post_json
from haimaker.providers.http1 import BodyTooLarge, Http1Client, PoolTimeout, TransportError, TransportTimeout
from haimaker.providers.tls import TrustStore
from tests.support.certificates import CertificateAuthority, make_authority

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


# ---- the client under pressure (issue 11) ------------------------------------------------------------------

_OK = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


async def test_a_keep_alive_socket_the_server_dropped_as_we_wrote_is_retried_once_on_a_new_connection(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    requests = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        first_connection = server.connections == 1
        while True:
            await _read_request(reader)
            requests += 1
            if first_connection and requests == 2:
                return  # the server gave up on the idle socket just as our request arrived: closed, not a byte sent
            writer.write(_OK)
            await writer.drain()

    server = await serve(handler)
    client = Http1Client()
    try:
        for _ in range(2):
            response = await client.post(server.url, {}, b"{}", timeout_s=5)
            assert await response.read() == b"ok"
    finally:
        client.close()
    assert (requests, server.connections) == (3, 2)


async def test_a_keep_alive_socket_the_server_closed_while_idle_is_never_written_to(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_OK)  # keep-alive by default, then the server's idle timeout closes it at once
        await writer.drain()

    server = await serve(handler)
    client = Http1Client()
    try:
        response = await client.post(server.url, {}, b"{}", timeout_s=5)
        assert await response.read() == b"ok"
        await asyncio.sleep(0.05)  # the FIN arrives while the connection sits in the pool
        response = await client.post(server.url, {}, b"{}", timeout_s=5)
        assert await response.read() == b"ok"
    finally:
        client.close()
    assert server.connections == 2


async def test_a_reused_connection_that_broke_after_a_response_byte_is_not_retried(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(_OK)
        await writer.drain()
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")  # the upstream may have acted on the request: never send it twice
        await writer.drain()

    server = await serve(handler)
    client = Http1Client()
    try:
        response = await client.post(server.url, {}, b"{}", timeout_s=5)
        assert await response.read() == b"ok"
        with pytest.raises(TransportError):
            await client.post(server.url, {}, b"{}", timeout_s=5)
    finally:
        client.close()
    assert server.connections == 1


async def test_a_new_connection_closed_before_answering_is_not_retried(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)

    server = await serve(handler)
    client = Http1Client()
    try:
        with pytest.raises(TransportError):
            await client.post(server.url, {}, b"{}", timeout_s=5)
    finally:
        client.close()
    assert server.connections == 1


async def test_a_connection_the_upstream_said_to_close_is_not_pooled(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    closed_by_client: list[bool] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()
        # The server leaves the socket open: only the client's reading of the header can keep it out of the pool.
        closed_by_client.append(await reader.read() == b"")

    server = await serve(handler)
    client = Http1Client()
    try:
        for _ in range(2):
            response = await client.post(server.url, {}, b"{}", timeout_s=2)
            assert await response.read() == b"ok"
    finally:
        client.close()
    await asyncio.sleep(0.05)
    assert server.connections == 2
    assert closed_by_client[0] is True


async def test_a_json_body_without_a_length_ends_at_eof(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    body = b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "' + b"z" * 100_000 + b'"}}]}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")
        for start in range(0, len(body), 30_000):
            writer.write(body[start : start + 30_000])
            await writer.drain()
            await asyncio.sleep(0.01)
        # returning closes the socket: the end of the body

    server = await serve(handler)
    client = Http1Client()
    try:
        for _ in range(2):
            response = await client.post(server.url, {}, b"{}", timeout_s=5)
            assert await response.read(max_bytes=1024 * 1024) == body
    finally:
        client.close()
    assert server.connections == 2, "a body that ended at EOF leaves no connection to reuse"


async def test_an_event_stream_without_a_length_ends_at_eof(serve: Callable[[Handler], Awaitable[Server]]) -> None:
    events = [b'data: {"n": %d}\n\n' % index for index in range(5)] + [b"data: [DONE]\n\n"]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\n")
        for event in events:
            writer.write(event)
            await writer.drain()
            await asyncio.sleep(0.01)

    server = await serve(handler)
    client = Http1Client()
    try:
        response = await client.post(server.url, {}, b"{}", timeout_s=5)
        pieces = [piece async for piece in response.iter_chunks()]
        assert response.at_end()
    finally:
        client.close()
    assert b"".join(pieces) == b"".join(events)


async def test_connections_per_origin_are_bounded_and_a_request_waits_for_a_free_one(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    gate = asyncio.Event()
    arrived = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal arrived
        while True:
            await _read_request(reader)
            arrived += 1
            await gate.wait()
            writer.write(_OK)
            await writer.drain()

    server = await serve(handler)
    client = Http1Client(max_connections_per_origin=2)

    async def call() -> bytes:
        response = await client.post(server.url, {}, b"{}", timeout_s=5)
        return await response.read()

    try:
        calls = [asyncio.ensure_future(call()) for _ in range(3)]
        while arrived < 2:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        assert (arrived, server.connections) == (2, 2), "the third request waits instead of opening a third socket"
        gate.set()
        assert await asyncio.gather(*calls) == [b"ok"] * 3
    finally:
        client.close()
    assert server.connections == 2, "the third request went out on a connection the first two freed"


async def test_a_request_that_finds_every_connection_busy_past_its_timeout_is_a_pool_timeout(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + _chunk(b"data: 1\n\n"))
        await writer.drain()
        await reader.read()  # a long stream, until the client lets go

    server = await serve(handler)
    client = Http1Client(max_connections_per_origin=1)
    try:
        streaming = await client.post(server.url, {}, b"{}", timeout_s=5)
        with pytest.raises(PoolTimeout):
            await client.post(server.url, {}, b"{}", timeout_s=0.2)
        streaming.close()  # its slot is free again
        third = await client.post(server.url, {}, b"{}", timeout_s=2)
        third.close()
    finally:
        client.close()
    assert server.connections == 2


# ---- TLS to an upstream whose certificate comes from a private CA -----------------------------------------


@pytest.fixture(scope="module")
def authority(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    return make_authority(tmp_path_factory.mktemp("tls") / "ca")


@pytest.fixture
async def tls_url(authority: CertificateAuthority) -> AsyncIterator[str]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await _read_request(reader)
                writer.write(_OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=authority.server_context())
    port = server.sockets[0].getsockname()[1]
    yield f"https://127.0.0.1:{port}/v1/chat/completions"
    server.close()
    await server.wait_closed()


async def test_a_tls_upstream_is_verified_against_the_configured_ca(
    tls_url: str, authority: CertificateAuthority
) -> None:
    client = Http1Client()
    try:
        for _ in range(2):
            response = await client.post(tls_url, {}, b"{}", timeout_s=5, verify=str(authority.ca_file))
            assert await response.read() == b"ok"
    finally:
        client.close()


async def test_a_tls_upstream_signed_by_an_unknown_ca_is_refused(tls_url: str) -> None:
    client = Http1Client()
    try:
        with pytest.raises(TransportError, match="certificate verify failed"):
            await client.post(tls_url, {}, b"{}", timeout_s=5)
    finally:
        client.close()


async def test_ssl_cert_file_and_ssl_verify_in_the_environment_choose_what_is_trusted(
    tls_url: str, authority: CertificateAuthority
) -> None:
    trusting = Http1Client(tls=TrustStore({"SSL_CERT_FILE": str(authority.ca_file)}))
    unverified = Http1Client(tls=TrustStore({"SSL_VERIFY": "False"}))
    other_ca = Http1Client(tls=TrustStore({"SSL_VERIFY": "True"}))
    try:
        for client in (trusting, unverified):
            response = await client.post(tls_url, {}, b"{}", timeout_s=5)
            assert await response.read() == b"ok"
        with pytest.raises(TransportError, match="certificate verify failed"):
            await other_ca.post(tls_url, {}, b"{}", timeout_s=5)
        # A deployment's own setting wins over the environment (LiteLLM's order).
        with pytest.raises(TransportError, match="certificate verify failed"):
            await unverified.post(tls_url, {}, b"{}", timeout_s=5, verify=True)
    finally:
        for client in (trusting, unverified, other_ca):
            client.close()


async def test_litellm_settings_ssl_verify_applies_where_neither_the_deployment_nor_env_ssl_verify_says(
    tls_url: str, authority: CertificateAuthority
) -> None:
    ca = str(authority.ca_file)
    from_settings = Http1Client(tls=TrustStore({}, setting=ca))
    env_wins = Http1Client(tls=TrustStore({"SSL_VERIFY": "True"}, setting=ca))
    cert_file = Http1Client(tls=TrustStore({"SSL_CERT_FILE": ca}, setting=True))
    unverified = Http1Client(tls=TrustStore({}, setting=False))
    try:
        for client in (from_settings, cert_file, unverified):
            response = await client.post(tls_url, {}, b"{}", timeout_s=5)
            assert await response.read() == b"ok"
        # LiteLLM's order (get_ssl_verify): the deployment's setting, then env SSL_VERIFY, then litellm_settings.
        with pytest.raises(TransportError, match="certificate verify failed"):
            await env_wins.post(tls_url, {}, b"{}", timeout_s=5)
        with pytest.raises(TransportError, match="certificate verify failed"):
            await unverified.post(tls_url, {}, b"{}", timeout_s=5, verify=True)
    finally:
        for client in (from_settings, env_wins, cert_file, unverified):
            client.close()


async def test_a_missing_ca_bundle_is_a_transport_error_naming_it(tls_url: str, tmp_path: Path) -> None:
    client = Http1Client()
    try:
        with pytest.raises(TransportError, match=r"nowhere\.pem"):
            await client.post(tls_url, {}, b"{}", timeout_s=5, verify=str(tmp_path / "nowhere.pem"))
    finally:
        client.close()


async def test_a_connection_that_could_not_be_opened_gives_its_slot_back() -> None:
    client = Http1Client(max_connections_per_origin=1)
    try:
        for _ in range(3):
            with pytest.raises(TransportError) as raised:
                await client.post("http://127.0.0.1:9/x", {}, b"{}", timeout_s=2)
            assert not isinstance(raised.value, PoolTimeout)
    finally:
        client.close()


async def test_a_connection_handed_to_a_request_cancelled_at_that_moment_goes_back_to_the_pool(
    serve: Callable[[Handler], Awaitable[Server]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await _read_request(reader)
            writer.write(_OK)
            await writer.drain()

    server = await serve(handler)
    client = Http1Client(max_connections_per_origin=1)
    try:
        first = await client.post(server.url, {}, b"{}", timeout_s=5)
        waiting = asyncio.ensure_future(client.post(server.url, {}, b"{}", timeout_s=5))
        await asyncio.sleep(0.05)  # the second request waits for the only connection
        await first.read()  # hands the connection to the waiter ...
        waiting.cancel()  # ... whose client hangs up before it could use it
        with pytest.raises(asyncio.CancelledError):
            await waiting
        third = await client.post(server.url, {}, b"{}", timeout_s=1)
        assert await third.read() == b"ok"
    finally:
        client.close()
    assert server.connections == 1
