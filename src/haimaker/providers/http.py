"""Upstream HTTP: the transport the providers call, and the mapping of its failures to our errors.

Upstream calls and webhooks (`post_json`) go through `http1.Http1Client` (lean keep-alive HTTP/1.1; see its
docstring for why not aiohttp). Transport failures become our `UpstreamError` tree in one place,
`_TransportErrors` (as HTTPX's `map_httpcore_exceptions` does for httpcore's), so nothing else sees a socket error:

    TransportTimeout   -> GatewayTimeoutError 504  (PoolTimeout: every connection to the upstream stayed busy)
    BodyTooLarge       -> BadGatewayError 502
    TransportError     -> BadGatewayError 502
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Final, Literal

import orjson

from haimaker.errors import BadGatewayError, GatewayTimeoutError, UpstreamError, UpstreamStatusError
from haimaker.providers.http1 import (
    DEFAULT_MAX_CONNECTIONS_PER_ORIGIN,
    BodyTooLarge,
    Http1Client,
    PoolTimeout,
    Response,
    TransportError,
    TransportTimeout,
)
from haimaker.providers.redaction import Redactor
from haimaker.providers.tls import TrustStore, Verify

# The largest real non-streaming answer: an embeddings batch at OpenAI's limits (2,048 inputs x 3,072 dimensions,
# pretty-printed float JSON at ~20 bytes a number) is about 120 MiB; a chat answer of 128k tokens is under 1 MB per
# choice. Past 128 MiB a body is a fault or an attack (a 200 MB body once took RSS to 791 MB).
DEFAULT_MAX_RESPONSE_BYTES: Final = 128 * 1024 * 1024
# An error body is read only for its message (the first 1,000 characters are kept).
_MAX_ERROR_BODY_BYTES: Final = 1024 * 1024

Phase = Literal["answer", "body", "stream"]


class _TransportErrors:
    """Maps a transport failure raised inside the block to our `UpstreamError` tree; anything else passes.

    A class, not `@contextmanager`: it is entered on every upstream call and read, and a generator-based one costs
    a generator and its frame each time.
    """

    __slots__ = ("_phase", "_timeout_s")

    def __init__(self, phase: Phase, timeout_s: float = 0.0) -> None:
        self._phase = phase
        self._timeout_s = timeout_s

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, (TransportError, TransportTimeout)):
            raise self._mapped(exc) from None

    def _mapped(self, exc: TransportError | TransportTimeout) -> UpstreamError:
        mid_stream = " mid-stream" if self._phase == "stream" else ""
        if isinstance(exc, PoolTimeout):
            return GatewayTimeoutError(f"No upstream connection was free: {exc}.")
        if isinstance(exc, TransportTimeout):
            if self._phase == "answer":
                return GatewayTimeoutError(f"Upstream did not answer within {self._timeout_s:g}s.")
            if self._phase == "body":
                return GatewayTimeoutError("Upstream timed out while sending its response.")
            return GatewayTimeoutError("Upstream timed out mid-stream.")
        if isinstance(exc, BodyTooLarge):
            return BadGatewayError(f"Upstream response larger than {exc.max_bytes} bytes.")
        return BadGatewayError(f"Upstream connection failed{mid_stream}: {exc}")


class HttpResponse:
    """A 2xx upstream response; `close()` drops the connection at once (client hung up)."""

    __slots__ = ("_max_bytes", "_redactor", "_response", "status")

    def __init__(self, response: Response, redactor: Redactor, max_bytes: int) -> None:
        self._response = response
        self._redactor = redactor
        self._max_bytes = max_bytes
        self.status = response.status

    async def read(self) -> bytes:
        """The whole body, scrubbed of secrets; a 502 past the size cap."""
        with _TransportErrors("body"):
            data = await self._response.read(max_bytes=self._max_bytes)
        if self._redactor.contains_secret(data):
            data = self._redactor.bytes(data)
        return data

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            with _TransportErrors("stream"):
                async for chunk in self._response.iter_chunks():
                    yield chunk
        finally:
            self._response.close()

    def at_end(self) -> bool:
        return self._response.at_end()

    def close(self) -> None:
        self._response.close()


class HttpTransport:
    """Owns the upstream connection pools, the secrets to scrub from what comes back, and the body cap."""

    def __init__(
        self,
        redactor: Redactor | None = None,
        *,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        max_connections_per_origin: int = DEFAULT_MAX_CONNECTIONS_PER_ORIGIN,
        tls: TrustStore | None = None,
    ) -> None:
        self._client = Http1Client(max_connections_per_origin=max_connections_per_origin, tls=tls)
        self.redactor = redactor or Redactor()
        self._max_response_bytes = max_response_bytes

    async def post(
        self,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
        *,
        timeout_s: float,
        secrets: tuple[str, ...] = (),
        verify: Verify | None = None,
    ) -> HttpResponse:
        """POST and return the response if 2xx; raise the mapped `UpstreamError` otherwise.

        `secrets` are scrubbed from an error on top of the transport's own (a caller's key it may not know);
        `verify` is the deployment's `ssl_verify` (`None`: the environment's).
        """
        with _TransportErrors("answer", timeout_s):
            response = await self._client.post(url, headers, body, timeout_s=timeout_s, verify=verify)
        if response.status < 300:
            return HttpResponse(response, self.redactor, self._max_response_bytes)
        try:
            raw = await response.read(max_bytes=_MAX_ERROR_BODY_BYTES)
        except (TransportError, TransportTimeout):
            raw = b""  # the status alone is the error; its message is a courtesy
        redactor = self.redactor if self.redactor.holds(secrets) else Redactor([*self.redactor.secrets, *secrets])
        raise status_error(response.status, raw, redactor, retry_after=response.header(b"retry-after"))

    async def aclose(self) -> None:
        self._client.close()


def status_error(
    status: int, raw: bytes, redactor: Redactor, *, retry_after: str | None = None
) -> UpstreamStatusError | BadGatewayError:
    """Map an upstream error status to ours: 4xx passed on, 5xx as 502; every upstream field scrubbed of secrets."""
    message, error_type, param = _upstream_error_fields(raw)
    message = redactor.message(message or f"Upstream returned HTTP {status}.")
    if status >= 500:
        return BadGatewayError(f"Upstream error (HTTP {status}): {message}")
    headers = {"retry-after": retry_after} if status == 429 and retry_after else {}
    result = UpstreamStatusError(
        message,
        status_code=status,
        error_type=redactor.message(error_type) if error_type else "invalid_request_error",
        param=redactor.message(param) if param else None,
        headers=headers,
    )
    result.is_retryable = status in (408, 429)
    return result


def _upstream_error_fields(raw: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # Cut generously: the message is scrubbed before it is capped, so that no cut splits a secret.
        text = raw[:4096].decode("utf-8", "replace").strip()
        return (text or None), None, None
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict):
        param = error.get("param")
        return (
            str(error.get("message") or "") or None,
            str(error.get("type")) if error.get("type") else None,
            str(param) if isinstance(param, str) else None,
        )
    if isinstance(error, str):
        return error, None, None
    if isinstance(data, dict):
        # AWS (Bedrock) answers `{"message": ...}` (some services `Message`), its type in a header.
        message = data.get("message", data.get("Message"))
        if isinstance(message, str) and message:
            return message, None, None
    return None, None, None


async def post_json(url: str, payload: object, *, timeout_s: float) -> bool:
    """POST a JSON document on a one-off connection (webhooks); True on a 2xx answer, never raises."""
    client = Http1Client()
    try:
        response = await client.post(url, _JSON_HEADERS, orjson.dumps(payload), timeout_s=timeout_s)
        try:
            await response.read(max_bytes=_MAX_ERROR_BODY_BYTES)
        except BodyTooLarge:
            pass  # the answer is read for nothing: its status alone says whether the alert arrived
        return response.status < 300
    except (TransportError, TransportTimeout, OSError, ValueError):
        return False
    finally:
        client.close()


_JSON_HEADERS: Final = {"Content-Type": "application/json"}
