"""Runs the ASGI app under uvicorn (default) or granian, with graceful shutdown and client read deadlines.

SIGTERM: stop accepting, let in-flight requests finish (bounded by `GRACEFUL_TIMEOUT_S`), then the
lifespan drains the spend recorder and closes every pool.

Slow clients (slowloris): a client has `client_header_timeout_s` to send a request's headers, counted from the
request's first byte (from connecting, for the first request of a connection); past it the connection is closed
without an answer. Then it has `client_body_timeout_s` to send the whole body; past it the answer is 408 (or only
a close, if the app already answered) and the connection is closed. Both are totals, not idle timeouts: an idle
timeout of any length is beaten by one byte just inside it, which is how the attack works. An idle keep-alive
connection is uvicorn's `timeout_keep_alive` (65 s). uvicorn has no header or body timeout of its own, so
`DeadlineHttpToolsProtocol` adds them to its httptools protocol; the CLI and the test proxy both serve through
`server_config(...)`. granian has a header timeout (`HTTP1Settings.header_read_timeout`), which we set; it has no
body timeout, so under granian a body dripped byte by byte still holds its connection: use uvicorn (the default)
or a reverse proxy's body timeout there (README, "Hostile clients").
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import threading
from collections.abc import Generator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from haimaker.config.loader import Settings
from haimaker.errors import RequestTimeoutError
from haimaker.startup import LISTEN_ENV

GRACEFUL_TIMEOUT_S = 30
KEEP_ALIVE_S = 65
DEFAULT_HEADER_TIMEOUT_S: Final = 10.0
DEFAULT_BODY_TIMEOUT_S: Final = 60.0

logger = logging.getLogger("haimaker.server")

_IDLE: Final = 0
_HEADERS: Final = 1
_BODY: Final = 2


def _timeout_response(timeout_s: float) -> bytes:
    error = RequestTimeoutError(f"The request body was not received within {timeout_s:g} seconds.")
    body = orjson.dumps(error.envelope())
    head = (
        b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    return head + body


class ServerConfig(uvicorn.Config):
    """uvicorn's config plus the client read deadlines, which `DeadlineHttpToolsProtocol` reads from it.

    A module-level class (not a closure) so that it pickles into `--num_workers` worker processes.
    """

    def __init__(
        self,
        app: Any,
        *,
        client_header_timeout_s: float = DEFAULT_HEADER_TIMEOUT_S,
        client_body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, http=DeadlineHttpToolsProtocol, **kwargs)
        self.client_header_timeout_s = client_header_timeout_s
        self.client_body_timeout_s = client_body_timeout_s


# Set in every request's ASGI scope by `DeadlineHttpToolsProtocol`: an app may put a callable there, which the protocol
# calls when the client's connection is lost before the response is complete (`api/llm.py` cancels the request
# with it, without a task per request blocked in `receive()` to notice the hang-up).
HANGUP_SCOPE_KEY: Final = "haimaker.on_hangup"


class _CoalescingWriter:
    """The response writer uvicorn's request cycle sees: a response head is held until the body's first bytes, so
    that a whole response leaves in one send instead of two.

    Each send on a TCP socket is a system call that does the receiver's work too on loopback; the head and the body
    of a JSON answer go out back to back, so the second send was pure cost (it was the largest single line of the
    proxy's profile). A head not followed by a body within the same loop iteration (a stream whose first chunk is
    not there yet, a HEAD answer) is sent by a callback scheduled for the next one, so nothing is held back longer.
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: bytes | None = None

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            self._transport.writelines((pending, data))
        elif data.startswith(b"HTTP/1.1 "):
            self._pending = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        pending = self._pending
        if pending is not None:
            self._pending = None
            if not self._transport.is_closing():
                self._transport.write(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()


class DeadlineHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on a request's headers and on its body.

    One timer per connection at most, armed only while a request is incomplete after the bytes at hand were
    parsed: a request that arrives whole in one read (nearly all) never arms one, so the cost on the hot path is
    a few attribute writes. The first request's header timer is armed on connecting, as a client may send nothing.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timeout_s: float = getattr(config, "client_header_timeout_s", DEFAULT_HEADER_TIMEOUT_S)
        self._body_timeout_s: float = getattr(config, "client_body_timeout_s", DEFAULT_BODY_TIMEOUT_S)
        self._awaiting = _IDLE
        self._phase_started_at = 0.0
        self._deadline: asyncio.TimerHandle | None = None
        self._writer: _CoalescingWriter | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._writer = _CoalescingWriter(transport, self.loop)
        self._awaiting = _HEADERS
        self._phase_started_at = self.loop.time()
        self._deadline = self.loop.call_later(self._header_timeout_s, self._on_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and not cycle.response_complete:
            on_hangup = cycle.scope.get(HANGUP_SCOPE_KEY)
            if callable(on_hangup):
                on_hangup()

    def data_received(self, data: bytes) -> None:
        if self._writer is not None:
            self._writer.flush()  # the protocol may answer on its own (a 400 for a bad request): in order
        super().data_received(data)
        if self._awaiting != _IDLE and self._deadline is None and not self.transport.is_closing():
            timeout_s = self._header_timeout_s if self._awaiting == _HEADERS else self._body_timeout_s
            self._deadline = self.loop.call_at(self._phase_started_at + timeout_s, self._on_deadline)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # not the first request, whose timer runs from connecting
            self._phase_started_at = self.loop.time()
        self._awaiting = _HEADERS

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self._writer is not None:
            self.cycle.transport = self._writer  # type: ignore[assignment]
            self.cycle.scope[HANGUP_SCOPE_KEY] = None  # type: ignore[typeddict-unknown-key]
        self._cancel_deadline()
        self._awaiting = _BODY
        self._phase_started_at = self.loop.time()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._cancel_deadline()
        self._awaiting = _IDLE

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _on_deadline(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused or self.pipeline:
            # Not the client's delay: we are not reading (the app has not taken what came), or the late request is
            # queued behind a pipelined one still being answered (a 408 now would cut into that answer).
            timeout_s = self._header_timeout_s if self._awaiting == _HEADERS else self._body_timeout_s
            self._deadline = self.loop.call_later(timeout_s, self._on_deadline)
            return
        cycle = self.cycle
        if self._awaiting == _BODY and cycle is not None and not cycle.response_started:
            # The app waits in receive(): it gets a disconnect, and whatever it sends after is dropped.
            cycle.disconnected = True
            cycle.message_event.set()
            self.transport.write(_timeout_response(self._body_timeout_s))
        logger.info(
            "closing a connection from %s: its request %s did not arrive in time",
            self.client[0] if self.client else "?",
            "body" if self._awaiting == _BODY else "headers",
        )
        self.transport.close()


def server_config(app: Any, settings: Settings, **options: Any) -> ServerConfig:
    """The uvicorn config the proxy serves with (the CLI and the test proxy alike); `options` add to or override it."""
    general = settings.config.general_settings
    common: dict[str, Any] = {
        "lifespan": "on",
        "timeout_graceful_shutdown": GRACEFUL_TIMEOUT_S,
        "timeout_keep_alive": KEEP_ALIVE_S,
        # The key throttle reads the socket peer, or X-Forwarded-For only from `auth_trusted_proxies` (our own
        # rule); uvicorn's rewriting of the client address would let any client pick its address.
        "proxy_headers": False,
        "server_header": False,
        **options,
    }
    return ServerConfig(
        app,
        client_header_timeout_s=general.client_header_timeout_s,
        client_body_timeout_s=general.client_body_timeout_s,
        **common,
    )


def run_server(
    settings: Settings, config_path: Path | None, *, host: str, port: int, workers: int, server: str
) -> None:
    """Serve until SIGTERM/SIGINT. `--detailed_debug` reaches every process through env DETAILED_DEBUG (`logs.py`)."""
    if workers > 1 and not settings.redis_url:
        # Each worker keeps its own counters in memory: without Redis, N workers would enforce N budgets.
        from haimaker.config.loader import ConfigError

        raise ConfigError(["--num_workers > 1 needs shared state: set general_settings.redis_url (or env REDIS_URL)"])
    if config_path is not None:
        os.environ["HAIMAKER_CONFIG"] = str(config_path.resolve())
    # The ready line of every process this starts names the address clients reach (`startup.py`).
    os.environ[LISTEN_ENV] = f"http://{'localhost' if host in ('0.0.0.0', '::') else host}:{port}"
    if server == "granian":
        _run_granian(host, port, workers, settings)
        return
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        # uvicorn's own lines stay at warnings whatever --detailed_debug says, and its access log off: ours is the
        # one (`api/access_log.py`), with the customer in it.
        "log_level": "warning",
        "access_log": False,
        "log_config": uvicorn_log_config(),
    }
    if workers > 1:
        # What `uvicorn.run(..., workers=N)` does, with our config class (it pickles into each worker).
        from uvicorn.supervisors import Multiprocess

        config = server_config("haimaker.app:app_from_env", settings, factory=True, workers=workers, **options)
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return
    from haimaker.app import create_app

    GracefulServer(server_config(create_app(settings, serving=True), settings, **options)).run()


class GracefulServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its graceful shutdown, so the process dies "by signal" even when every
    request finished and every charge was written; we exit 0 instead, as process managers expect of a clean stop."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class QuietStartupFailure(logging.Filter):
    """Drops the servers' own `startup failed` lines: the lifespan has said what failed, in one line."""

    _LINES: Final = frozenset({"Application startup failed. Exiting.", "ASGI lifespan startup failed"})

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self._LINES


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's logging config with `QuietStartupFailure` on its error logger (a dict, so that `--num_workers`'
    processes, which configure their logging afresh, get it too)."""
    from uvicorn.config import LOGGING_CONFIG

    return _quieted(LOGGING_CONFIG, "uvicorn.error")


def _quieted(log_config: dict[str, Any], logger_name: str) -> dict[str, Any]:
    """A copy of a server's logging config with `QuietStartupFailure` on its logger `logger_name`."""
    config: dict[str, Any] = copy.deepcopy(log_config)
    config.setdefault("filters", {})["quiet_startup_failure"] = {"()": f"{__name__}.QuietStartupFailure"}
    config["loggers"][logger_name]["filters"] = ["quiet_startup_failure"]
    return config


def _granian_log_config() -> dict[str, Any]:
    """granian's logging config with `QuietStartupFailure` on its logger (granian hands it to each worker)."""
    from granian.log import LOGGING_CONFIG

    return _quieted(LOGGING_CONFIG, "_granian")


def _run_granian(host: str, port: int, workers: int, settings: Settings) -> None:
    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.log import LogLevels

    header_timeout_ms = int(settings.config.general_settings.client_header_timeout_s * 1000)
    Granian(
        "haimaker.app:app_from_env",
        factory=True,
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http1_settings=HTTP1Settings(header_read_timeout=header_timeout_ms),
        log_level=LogLevels.warning,  # its INFO lines say what our ready line says
        log_dictconfig=_granian_log_config(),
        log_access=False,  # ours is the one (`api/access_log.py`)
    ).serve()
