"""A lean HTTP/1.1 client for upstream calls: keep-alive pools on asyncio protocols, httptools parsing.

Why not aiohttp here: on the proxy's hot path aiohttp's client was the largest single cost (about a third
of the CPU per request in profiles: request/response objects, header multidicts, timers), for features an
upstream call does not use (cookies, redirects, proxies, multipart). This client does exactly what a
proxied LLM call needs: POST a JSON body, read the status and headers, then the body whole or piece by
piece as it arrives, on a reused connection.

Invariants:
- A connection is reused only after a complete response that did not say `Connection: close`.
- A response abandoned early (client hang-up, error) closes its connection: no half-read socket is pooled.
- A request that fails on a *reused* connection before any response byte arrived is retried once on a new
  connection (the server may have closed an idle keep-alive socket at the same moment we wrote to it).
- Timeouts: `timeout_s` bounds connecting, the wait for the response head, and each wait for body bytes
  (silence), never a long stream that keeps sending.
- Bounded memory: a connection stops reading its socket while more than `_HIGH_WATER_BYTES` of body wait for the
  consumer (a fast upstream relayed to a slow client), and `read(max_bytes=...)` gives up on a body past its cap,
  closing the connection instead of holding a hostile upstream's 200 MB answer.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

from haimaker.deadlines import wait_until

_IDLE_PER_ORIGIN = 256
# Body bytes buffered per connection before its socket is paused: enough for any burst of SSE events (one relayed
# piece), small enough that a slow client never makes us hold a whole answer.
_HIGH_WATER_BYTES = 1024 * 1024


class TransportError(Exception):
    """The connection failed (refused, reset, closed mid-response)."""


class TransportTimeout(Exception):
    """Nothing arrived within the timeout."""


class BodyTooLarge(TransportError):
    """The response body is larger than the reader's cap (the connection was closed)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"response body larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection carrying one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.closed = False
        self.got_bytes = False
        self.complete = False
        self._head: asyncio.Future[None] | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._queued = 0
        self._paused = False
        self._wakeup: asyncio.Future[None] | None = None
        self._error: Exception | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"invalid HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        # A response without a length ends at EOF; httptools needs to be told.
        if self.status and not self.complete:
            try:
                self._parser.feed_data(b"")
            except httptools.HttpParserError:
                pass
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.complete:
            self._fail(TransportError("connection closed before the response was complete"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._queued += len(body)
        if self._queued > _HIGH_WATER_BYTES and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # the client side
    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake()

    def start(self, request: bytes) -> asyncio.Future[None]:
        """Write a request; return the future of its response head."""
        self.status, self.headers, self.complete, self.got_bytes = 0, [], False, False
        self._chunks.clear()
        self._queued = 0
        self._error = None
        self._parser = httptools.HttpResponseParser(self)
        self._head = self._loop.create_future()
        assert self.transport is not None
        self.transport.write(request)
        return self._head

    async def next_chunk(self, timeout_s: float) -> bytes | None:
        """All body bytes that arrived since the last call, or None at the end of the response.

        Joining what is queued matters for streams: one socket read often holds many SSE events (one
        HTTP chunk each), and relaying them as one piece costs one write downstream instead of one per event.
        """
        while True:
            chunks = self._chunks
            if chunks:
                self._queued = 0
                if self._paused:
                    self._paused = False
                    if not self.closed and self.transport is not None:
                        self.transport.resume_reading()
                if len(chunks) == 1:
                    return chunks.popleft()
                data = b"".join(chunks)
                chunks.clear()
                return data
            if self.complete:
                return None
            if self._error is not None:
                raise self._error
            self._wakeup = self._loop.create_future()
            try:
                await wait_until(self._wakeup, timeout_s, TransportTimeout)
            finally:
                self._wakeup = None

    def drained(self) -> bool:
        return not self._chunks

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Response:
    """A response whose head has arrived; its body is read whole or piece by piece, exactly once."""

    __slots__ = ("_conn", "_pool", "_released", "_timeout_s", "headers", "status")

    def __init__(self, conn: _Connection, pool: _Pool, timeout_s: float) -> None:
        self._conn = conn
        self._pool = pool
        self._timeout_s = timeout_s
        self._released = False
        self.status = conn.status
        self.headers = conn.headers

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value.decode("latin-1")
        return None

    async def read(self, *, max_bytes: int | None = None) -> bytes:
        """The whole body; past `max_bytes` (announced or received) the connection is closed, `BodyTooLarge` raised."""
        parts = []
        size = 0
        try:
            length = self.header(b"content-length")
            if max_bytes is not None and length is not None and length.isdigit() and int(length) > max_bytes:
                raise BodyTooLarge(max_bytes)
            while (chunk := await self._conn.next_chunk(self._timeout_s)) is not None:
                size += len(chunk)
                if max_bytes is not None and size > max_bytes:
                    raise BodyTooLarge(max_bytes)
                parts.append(chunk)
        except BaseException:
            self.close()
            raise
        self._release()
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            while (chunk := await self._conn.next_chunk(self._timeout_s)) is not None:
                yield chunk
        except BaseException:
            self.close()
            raise
        self._release()

    def at_end(self) -> bool:
        """The whole response has arrived and every piece of it was handed out."""
        return self._conn.complete and self._conn.drained()

    def _release(self) -> None:
        if not self._released:
            self._released = True
            self._pool.give_back(self._conn)

    def close(self) -> None:
        """Abandon the response: the connection is closed, never reused."""
        if not self._released:
            self._released = True
            self._conn.close()


class _Pool:
    """Idle keep-alive connections to one origin."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.idle: collections.deque[_Connection] = collections.deque()

    async def connect(self, timeout_s: float) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    _Connection, self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None
                ),
                timeout_s,
            )
        except TimeoutError:
            raise TransportTimeout() from None
        except OSError as exc:
            raise TransportError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        # uvloop may return before `connection_made` ran: take the transport from the call itself.
        conn.transport = transport
        return conn

    def take_idle(self) -> _Connection | None:
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    def give_back(self, conn: _Connection) -> None:
        if conn.keep_alive and conn.complete and not conn.closed and len(self.idle) < _IDLE_PER_ORIGIN:
            self.idle.append(conn)
        else:
            conn.close()

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class Http1Client:
    """POSTs to upstreams over pooled keep-alive connections."""

    def __init__(self) -> None:
        self._pools: dict[tuple[str, str, int], _Pool] = {}
        self._tls: ssl.SSLContext | None = None

    def _pool(self, scheme: str, host: str, port: int) -> _Pool:
        key = (scheme, host, port)
        pool = self._pools.get(key)
        if pool is None:
            tls = None
            if scheme == "https":
                if self._tls is None:
                    self._tls = ssl.create_default_context()
                tls = self._tls
            pool = self._pools[key] = _Pool(host, port, tls)
        return pool

    async def post(self, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float) -> Response:
        """Send the request; return once the response head has arrived."""
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        head = [f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {len(body)}\r\n"]
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        request = "".join(head).encode("latin-1") + b"\r\n" + body
        pool = self._pool(scheme, host, port)
        conn = pool.take_idle()
        if conn is not None:
            try:
                return await self._exchange(pool, conn, request, timeout_s)
            except TransportError:
                if conn.got_bytes:
                    raise
                # The idle socket was closed by the server as we wrote: one fresh attempt.
        conn = await pool.connect(timeout_s)
        return await self._exchange(pool, conn, request, timeout_s)

    async def _exchange(self, pool: _Pool, conn: _Connection, request: bytes, timeout_s: float) -> Response:
        head = conn.start(request)
        try:
            await wait_until(head, timeout_s, TransportTimeout)
        except BaseException:
            conn.close()
            raise
        return Response(conn, pool, timeout_s)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
