"""Upstream HTTP: the transport the providers call, and the mapping of its failures to our errors.

Upstream calls and webhooks (`post_json`) go through `http1.Http1Client` (lean keep-alive HTTP/1.1; see its
docstring for why not aiohttp). Transport failures become our `UpstreamError` tree here, so nothing else sees a
socket error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Final

import orjson

from haimaker.errors import BadGatewayError, GatewayTimeoutError, UpstreamStatusError
from haimaker.providers.http1 import Http1Client, Response, TransportError, TransportTimeout
from haimaker.providers.redaction import sanitize_message


class HttpResponse:
    """A 2xx upstream response; `close()` drops the connection at once (client hung up)."""

    __slots__ = ("_response", "status")

    def __init__(self, response: Response) -> None:
        self._response = response
        self.status = response.status

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except TransportTimeout:
            raise GatewayTimeoutError("Upstream timed out while sending its response.") from None
        except TransportError as exc:
            raise BadGatewayError(f"Upstream connection failed: {exc}") from None

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.iter_chunks():
                yield chunk
        except TransportTimeout:
            raise GatewayTimeoutError("Upstream timed out mid-stream.") from None
        except TransportError as exc:
            raise BadGatewayError(f"Upstream connection failed mid-stream: {exc}") from None
        finally:
            self._response.close()

    def at_end(self) -> bool:
        return self._response.at_end()

    def close(self) -> None:
        self._response.close()


class HttpTransport:
    """Owns the upstream connection pools."""

    def __init__(self) -> None:
        self._client = Http1Client()

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float, secrets: tuple[str, ...] = ()
    ) -> HttpResponse:
        """POST and return the response if 2xx; raise the mapped `UpstreamError` otherwise."""
        try:
            response = await self._client.post(url, headers, body, timeout_s=timeout_s)
        except TransportTimeout:
            raise GatewayTimeoutError(f"Upstream did not answer within {timeout_s:g}s.") from None
        except TransportError as exc:
            raise BadGatewayError(f"Upstream connection failed: {exc}") from None
        if response.status < 300:
            return HttpResponse(response)
        try:
            raw = await response.read()
        except (TransportError, TransportTimeout):
            raw = b""
        raise status_error(response.status, raw, secrets, retry_after=response.header(b"retry-after"))

    async def aclose(self) -> None:
        self._client.close()


def status_error(
    status: int, raw: bytes, secrets: tuple[str, ...], *, retry_after: str | None = None
) -> UpstreamStatusError | BadGatewayError:
    """Map an upstream error status to ours: 4xx passed on, 5xx as 502; the message sanitised."""
    message, error_type, param = _upstream_error_fields(raw)
    message = sanitize_message(message or f"Upstream returned HTTP {status}.", secrets)
    if status >= 500:
        error = BadGatewayError(f"Upstream error (HTTP {status}): {message}")
        error.upstream_status = status  # type: ignore[attr-defined]
        return error
    headers = {"retry-after": retry_after} if status == 429 and retry_after else {}
    result = UpstreamStatusError(
        message, status_code=status, error_type=error_type or "invalid_request_error", param=param, headers=headers
    )
    result.is_retryable = status in (408, 429)
    return result


def _upstream_error_fields(raw: bytes) -> tuple[str | None, str | None, str | None]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        text = raw[:300].decode("utf-8", "replace").strip()
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
    return None, None, None


async def post_json(url: str, payload: object, *, timeout_s: float) -> bool:
    """POST a JSON document on a one-off connection (webhooks); True on a 2xx answer, never raises."""
    client = Http1Client()
    try:
        response = await client.post(url, _JSON_HEADERS, orjson.dumps(payload), timeout_s=timeout_s)
        await response.read()
        return response.status < 300
    except (TransportError, TransportTimeout, OSError, ValueError):
        return False
    finally:
        client.close()


_JSON_HEADERS: Final = {"Content-Type": "application/json"}
