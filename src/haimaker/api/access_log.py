"""The access log: one line per HTTP request on the `haimaker.access` logger, when it is on.

    POST /v1/chat/completions 200 41.7ms customer=acme-42 key=billing-bot

Method, path (never the query string, which may carry a key), status, milliseconds from the request's arrival to
the end of its answer (a stream's last event), then the customer the request was billed to and the key as logs may
name it (alias, `sk-...abcd` or `master`), when they are known. Off by default; on with `--detailed_debug` or
`general_settings.access_log: true` (`Settings.access_log`). It is the only access log: uvicorn's and granian's
are off (`server.py`).

The pipeline learns the customer; it is handed an `Attribution` through the ASGI scope (`ATTRIBUTION_KEY`), which
the LLM endpoint passes on. When the log is off nothing is put in the scope and nothing is formatted: the app
checks one attribute per request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

from haimaker.identity import Attribution

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ATTRIBUTION_KEY: Final = "haimaker.attribution"
logger = logging.getLogger("haimaker.access")


async def logged(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one HTTP request with `app` and log its line once the answer is over (or the app failed)."""
    started = time.perf_counter()
    attribution = scope[ATTRIBUTION_KEY] = Attribution()
    status = 0

    async def send_noting_status(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        await send(message)

    try:
        await app(scope, receive, send_noting_status)
    except BaseException:
        status = status or 500  # what the server answers for an app that failed before answering
        raise
    finally:
        logger.info("%s", access_line(scope, status, time.perf_counter() - started, attribution))


def access_line(scope: Scope, status: int, elapsed_s: float, attribution: Attribution) -> str:
    """`POST /v1/chat/completions 200 41.7ms customer=acme-42 key=sk-...abcd`; status 0: no answer was sent (the
    client left first)."""
    line = f"{scope['method']} {_printable(scope['path'])} {status} {elapsed_s * 1000:.1f}ms"
    if attribution.customer_id is not None:
        line += f" customer={_printable(attribution.customer_id)}"
    label = attribution.key_label
    if label is not None:
        line += f" key={_printable(label)}"
    return line


def _printable(text: str) -> str:
    # A client chooses the path (percent-decoded) and the customer id: a newline in them must not forge a log line.
    return text if text.isprintable() and " " not in text else repr(text)
