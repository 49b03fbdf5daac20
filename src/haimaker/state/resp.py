"""The counters' Lua scripts over one multiplexed Redis connection: the hot path's Redis client.

Every admitted request runs two scripts (admit, then settle). Through redis-py each call cost ~110 µs of CPU in our
process (a pooled connection checked out under a lock, command objects, a response parser per call), which doubled
the proxy's CPU per request when the counters are in Redis. Here concurrent calls share one connection: a call
writes its command and appends a future to a FIFO; Redis answers in order, hiredis (C) parses the replies, and each
reply resolves the oldest waiting future. Commands issued in the same event-loop turn go out in one write.

Failures raise `redis.exceptions` types, so the outage policy (`resilient.py`) treats both clients alike:
- a lost connection fails every waiting call with `ConnectionError`; the next call connects again;
- a reply that does not come within `timeout_s` fails with `TimeoutError` and closes the connection (later replies
  could no longer be matched to their calls);
- an error reply is a `ResponseError` for that call only; a script missing from Redis' cache (`NOSCRIPT`, after a
  restart or `SCRIPT FLUSH`) is loaded and the call sent again, once.

Everything else (pipelines, pub/sub, plain commands) stays on redis-py.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from haimaker.deadlines import wait_until


def _encode(args: Sequence[str | int | bytes]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reader = hiredis.Reader(replyError=ResponseError)
        self._waiters: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._outgoing: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while (reply := self._reader.gets()) is not False:
            if not self._waiters:  # pragma: no cover - Redis never sends unasked replies on this connection
                self.close(RedisConnectionError("unexpected reply from Redis"))
                return
            waiter = self._waiters.popleft()
            if waiter.done():
                continue  # its caller gave up (cancelled); the reply is dropped, the order is kept
            if isinstance(reply, ResponseError):
                waiter.set_exception(_script_error(reply))
            else:
                waiter.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(RedisConnectionError(f"connection to Redis lost: {exc}" if exc else "connection to Redis closed"))

    def send(self, command: bytes) -> asyncio.Future[Any]:
        waiter = self._loop.create_future()
        if not self._outgoing:
            self._loop.call_soon(self._flush)
        self._outgoing.append(command)
        self._waiters.append(waiter)
        return waiter

    def _flush(self) -> None:
        if self._outgoing and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def close(self, error: Exception) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)


def _script_error(reply: ResponseError) -> ResponseError:
    message = str(reply)
    return NoScriptError(message) if message.startswith("NOSCRIPT") else reply


class ScriptClient:
    """Runs registered Lua scripts (EVALSHA) over one shared connection, connecting lazily."""

    @classmethod
    def like(cls, client: Redis) -> ScriptClient:
        """A script client for the server, database and credentials of a redis-py client, with its timeouts."""
        pool = client.connection_pool
        kwargs = dict(pool.connection_kwargs)
        kwargs["connection_class"] = pool.connection_class
        return cls(
            kwargs,
            timeout_s=float(kwargs.get("socket_timeout") or 5.0),
            connect_timeout_s=float(kwargs.get("socket_connect_timeout") or 5.0),
        )

    def __init__(self, connection_kwargs: Mapping[str, Any], *, timeout_s: float, connect_timeout_s: float) -> None:
        self._host = str(connection_kwargs.get("host", "localhost"))
        self._port = int(connection_kwargs.get("port", 6379))
        self._path: str | None = connection_kwargs.get("path")
        self._db = int(connection_kwargs.get("db", 0) or 0)
        self._username: str | None = connection_kwargs.get("username")
        self._password: str | None = connection_kwargs.get("password")
        self._tls = _tls_context(connection_kwargs)
        self._timeout_s = timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._scripts: dict[str, tuple[bytes, bytes]] = {}  # name -> (sha1 hex, source)
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    def register(self, name: str, source: str) -> None:
        data = source.encode()
        self._scripts[name] = (hashlib.sha1(data).hexdigest().encode(), data)

    async def run(self, name: str, keys: Sequence[str], args: Sequence[str | int]) -> Any:
        sha, source = self._scripts[name]
        command = _encode([b"EVALSHA", sha, len(keys), *keys, *args])
        try:
            return await self._call(command)
        except NoScriptError:
            await self._call(_encode([b"SCRIPT", b"LOAD", source]))
            return await self._call(command)

    async def _call(self, command: bytes) -> Any:
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connection()
        try:
            return await wait_until(conn.send(command), self._timeout_s, self._no_answer)
        except RedisTimeoutError:
            conn.close(RedisConnectionError("connection to Redis closed after a timeout"))
            raise

    def _no_answer(self) -> RedisTimeoutError:
        return RedisTimeoutError(f"Redis did not answer within {self._timeout_s:g}s")

    async def _connection(self) -> _Connection:
        # Calls arriving while a connection is being made wait for that one instead of opening their own.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        finally:
            if self._connecting is connecting and connecting.done():
                self._connecting = None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                if self._path is not None:
                    _, conn = await loop.create_unix_connection(lambda: _Connection(loop), self._path)
                else:
                    _, conn = await loop.create_connection(
                        lambda: _Connection(loop),
                        self._host,
                        self._port,
                        ssl=self._tls,
                        server_hostname=self._host if self._tls else None,
                    )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from None
        self._conn = conn  # calls from now on queue behind AUTH and SELECT on this connection, in order
        try:
            if self._password is not None:
                credentials = [self._username, self._password] if self._username else [self._password]
                await self._call(_encode([b"AUTH", *credentials]))
            if self._db:
                await self._call(_encode([b"SELECT", self._db]))
        except BaseException:
            # A refused password or database: this connection must not serve anyone; the next call starts over.
            conn.close(RedisConnectionError("Redis refused the connection's credentials or database"))
            self._conn = None
            raise
        return conn

    def disconnect(self) -> None:
        """Drop the connection (after a Redis restart, or at shutdown); the next call connects again."""
        if self._conn is not None:
            self._conn.close(RedisConnectionError("connection to Redis closed"))
            self._conn = None


def _tls_context(connection_kwargs: Mapping[str, Any]) -> ssl.SSLContext | None:
    """The TLS context redis-py would use for the same `rediss://` URL (CA, client certificate, verification)."""
    connection_class = connection_kwargs.get("connection_class")
    if connection_class is None or "SSL" not in getattr(connection_class, "__name__", ""):
        return None
    context = ssl.create_default_context(
        cafile=connection_kwargs.get("ssl_ca_certs"),
        capath=connection_kwargs.get("ssl_ca_path"),
        cadata=connection_kwargs.get("ssl_ca_data"),
    )
    certfile = connection_kwargs.get("ssl_certfile")
    if certfile:
        context.load_cert_chain(certfile, connection_kwargs.get("ssl_keyfile"), connection_kwargs.get("ssl_password"))
    requirement = str(connection_kwargs.get("ssl_cert_reqs", "required")).lower()
    if requirement in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif str(connection_kwargs.get("ssl_check_hostname", True)).lower() in ("false", "0", "no"):
        context.check_hostname = False
    return context
