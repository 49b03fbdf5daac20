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
- A response without a length (neither `Content-Length` nor chunked) ends when the server closes the connection.
- At most `max_connections_per_origin` connections (idle, busy or connecting) per origin and TLS setting; a request
  that finds them all busy waits for one, first come first served, at most `timeout_s` (`PoolTimeout`). Connections
  are handed to waiters directly, so a newcomer never overtakes a request that was already waiting.
- Timeouts: `timeout_s` bounds the wait for a free connection, connecting, the wait for the response head, and
  each wait for body bytes (silence), never a long stream that keeps sending.
- Bounded memory: a connection stops reading its socket while more than `_HIGH_WATER_BYTES` of body wait for the
  consumer (a fast upstream relayed to a slow client), and `read(max_bytes=...)` gives up on a body past its cap,
  closing the connection instead of holding a hostile upstream's 200 MB answer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from urllib.parse import urlsplit

import httptools

from haimaker.deadlines import wait_until
from haimaker.providers.tls import TrustStore, Verify

# Enough for a busy instance's concurrent streams to one provider (each holds its connection for the whole answer),
# far below what a file-descriptor limit or an upstream's per-client cap would refuse.
DEFAULT_MAX_CONNECTIONS_PER_ORIGIN = 200
# Body bytes buffered per connection before its socket is paused: enough for any burst of SSE events (one relayed
# piece), small enough that a slow client never makes us hold a whole answer.
_HIGH_WATER_BYTES = 1024 * 1024


class TransportError(Exception):
    """The connection failed (refused, reset, closed mid-response)."""


class TransportTimeout(Exception):
    """Nothing arrived within the timeout."""


class PoolTimeout(TransportTimeout):
    """Every connection to the origin stayed busy for the whole timeout (nothing was sent)."""


class BodyTooLarge(TransportError):
    """The response body is larger than the reader's cap (the connection was closed)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"response body larger than {max_bytes} bytes")
        self.max_bytes = max_bytes


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection carrying one request at a time; it holds one of its pool's slots until closed."""

    def __init__(self, pool: _Pool) -> None:
        self.transport: asyncio.Transport | None = None
        self._pool: _Pool | None = pool
        self.used = False
        self._parser = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.closed = False
        self.got_bytes = False
        self.complete = False
        self._until_eof = False
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
        # A response without a length ends at EOF (RFC 9112 6.3); httptools has no call to say so.
        if self._until_eof and not self.complete:
            self.on_message_complete()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._free_slot()
        if not self.complete:
            self._fail(TransportError("connection closed before the response was complete"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.keep_alive = self._parser.should_keep_alive()
        if not self.keep_alive:
            # Only here can a body be delimited by EOF; bodiless statuses complete at once and never reach EOF.
            self._until_eof = not any(name in (b"content-length", b"transfer-encoding") for name, _ in self.headers)
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
        if self.closed:
            # Closed by the server while idle, after it was taken from the pool: a stale socket, retried.
            raise TransportError("connection closed while idle")
        self.used = True
        self.status, self.headers, self.complete, self.got_bytes = 0, [], False, False
        self._until_eof = False
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
        # Freed now, not at `connection_lost`: a TLS close may wait for the peer's close_notify.
        self._free_slot()

    def detach(self) -> None:
        """Close without freeing the slot: the caller takes it over."""
        self._pool = None
        self.close()

    def _free_slot(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.free_slot()


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
    """Connections to one origin: the idle ones, how many are open, and the requests waiting for one."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None, limit: int) -> None:
        self.host, self.port, self.tls, self.limit = host, port, tls, limit
        self.idle: collections.deque[_Connection] = collections.deque()
        self.opened = 0  # slots held: connections connecting, busy or idle
        # Each waiter is handed an idle connection, or None: a slot to open a new one with.
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()

    def take_idle(self) -> _Connection | None:
        """The most recently used idle connection (a plain call: the hot path awaits nothing to reuse one)."""
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed:
                return conn
        return None

    async def acquire(self, timeout_s: float, *, fresh: bool = False) -> _Connection:
        """A new connection under the limit, else the first one freed (a new one in its slot if `fresh`)."""
        if self.opened < self.limit and not self._waiters:
            self.opened += 1
            return await self._connect(timeout_s)
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            handed = await wait_until(waiter, timeout_s, self._pool_timeout(timeout_s))
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._take_back(waiter.result())  # handed over just as we gave up (cancelled)
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise
        if handed is not None and fresh:
            handed.detach()  # its slot is ours now: close it and connect anew in that slot
            handed = None
        if handed is None:
            return await self._connect(timeout_s)
        return handed

    def _pool_timeout(self, timeout_s: float) -> Callable[[], PoolTimeout]:
        def error() -> PoolTimeout:
            return PoolTimeout(
                f"all {self.limit} connections to {self.host}:{self.port} stayed busy for {timeout_s:g}s"
            )

        return error

    async def _connect(self, timeout_s: float) -> _Connection:
        """Open a connection in a slot already counted in `opened`."""
        loop = asyncio.get_running_loop()
        try:
            transport, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                ),
                timeout_s,
            )
        except BaseException as exc:
            self.free_slot()
            if isinstance(exc, TimeoutError):
                raise TransportTimeout() from None
            if isinstance(exc, OSError):
                raise TransportError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
            raise
        # uvloop may return before `connection_made` ran: take the transport from the call itself.
        conn.transport = transport
        return conn

    def _take_back(self, handed: _Connection | None) -> None:
        if handed is None:
            self.free_slot()
        else:
            self.give_back(handed)

    def give_back(self, conn: _Connection) -> None:
        if conn.keep_alive and conn.complete and not conn.closed:
            while self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(conn)
                    return
            self.idle.append(conn)
        else:
            conn.close()

    def free_slot(self) -> None:
        """A connection closed (or never opened): its slot goes to the first waiter, if any."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.opened -= 1

    def close(self) -> None:
        while self.idle:
            self.idle.pop().close()


class Http1Client:
    """POSTs to upstreams over pooled keep-alive connections."""

    def __init__(
        self, *, max_connections_per_origin: int = DEFAULT_MAX_CONNECTIONS_PER_ORIGIN, tls: TrustStore | None = None
    ) -> None:
        self._pools: dict[tuple[str, str, int, Verify | None], _Pool] = {}
        self._max_connections = max_connections_per_origin
        self._trust = tls

    def _pool(self, scheme: str, host: str, port: int, verify: Verify | None) -> _Pool:
        key = (scheme, host, port, verify)
        pool = self._pools.get(key)
        if pool is None:
            tls = None
            if scheme == "https":
                if self._trust is None:
                    self._trust = TrustStore()
                try:
                    tls = self._trust.context(verify)
                except OSError as exc:
                    raise TransportError(str(exc)) from None
            pool = self._pools[key] = _Pool(host, port, tls, self._max_connections)
        return pool

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float, verify: Verify | None = None
    ) -> Response:
        """Send the request; return once the response head has arrived.

        `verify` is the deployment's TLS setting (`None`: the environment's; see `tls.py`).
        """
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        host = parts.hostname or ""
        port = parts.port or (443 if scheme == "https" else 80)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        authority = parts.netloc.rpartition("@")[2]
        head = [f"POST {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {len(body)}\r\n"]
        head.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        request = "".join(head).encode("latin-1") + b"\r\n" + body
        pool = self._pool(scheme, host, port, verify)
        conn = pool.take_idle()
        if conn is None:
            conn = await pool.acquire(timeout_s)
        if conn.used:
            try:
                return await self._exchange(pool, conn, request, timeout_s)
            except TransportError:
                if conn.got_bytes:
                    raise
                # The idle socket was closed by the server as we wrote: one attempt on a new connection.
            conn = await pool.acquire(timeout_s, fresh=True)
        return await self._exchange(pool, conn, request, timeout_s)

    async def _exchange(self, pool: _Pool, conn: _Connection, request: bytes, timeout_s: float) -> Response:
        try:
            head = conn.start(request)
            await wait_until(head, timeout_s, TransportTimeout)
        except BaseException:
            conn.close()
            raise
        return Response(conn, pool, timeout_s)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
        self._pools.clear()
