"""The only module that speaks aiohttp: long-lived client sessions and their error mapping.

One `ClientSession` per upstream origin, created lazily and owned by `HttpTransport` until `aclose()`;
connector limits are explicit so a slow upstream cannot take every socket. Transport failures are
mapped to our `UpstreamError` tree here, so no aiohttp type escapes this module.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import aiohttp
import orjson

from haimaker.errors import BadGatewayError, GatewayTimeoutError, UpstreamStatusError
from haimaker.providers.redaction import sanitize_message

_CONNECTIONS_PER_ORIGIN = 512


class HttpResponse:
    """A 2xx upstream response; `close()` drops the connection at once (client hung up)."""

    __slots__ = ("_response", "_timeout_s", "status")

    def __init__(self, response: aiohttp.ClientResponse, timeout_s: float | None) -> None:
        self._response = response
        self._timeout_s = timeout_s
        self.status = response.status

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except TimeoutError:
            raise GatewayTimeoutError("Upstream timed out while sending its response.") from None
        except aiohttp.ClientError as exc:
            raise BadGatewayError(f"Upstream connection failed: {type(exc).__name__}") from None
        finally:
            self._response.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except TimeoutError:
            raise GatewayTimeoutError("Upstream timed out mid-stream.") from None
        except aiohttp.ClientError as exc:
            raise BadGatewayError(f"Upstream connection failed mid-stream: {type(exc).__name__}") from None
        finally:
            self._response.close()

    def close(self) -> None:
        self._response.close()


class HttpTransport:
    """Owns the aiohttp sessions for every upstream origin."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def _session(self, url: str) -> aiohttp.ClientSession:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        session = self._sessions.get(origin)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=_CONNECTIONS_PER_ORIGIN, limit_per_host=_CONNECTIONS_PER_ORIGIN, ttl_dns_cache=300
            )
            session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda obj: orjson.dumps(obj).decode(),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[origin] = session
        return session

    async def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, timeout_s: float, secrets: tuple[str, ...] = ()
    ) -> HttpResponse:
        """POST and return the response if 2xx; raise the mapped `UpstreamError` otherwise."""
        session = self._session(url)
        # sock_read bounds the wait for each piece, so a long stream that keeps sending is not cut,
        # while an upstream that goes silent is.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(timeout_s, 10.0), sock_read=timeout_s)
        try:
            response = await session.post(url, data=body, headers=dict(headers), timeout=timeout)
        except TimeoutError:
            raise GatewayTimeoutError(f"Upstream did not answer within {timeout_s:g}s.") from None
        except aiohttp.ClientError as exc:
            raise BadGatewayError(f"Upstream connection failed: {type(exc).__name__}") from None
        if response.status < 300:
            return HttpResponse(response, timeout_s)
        try:
            raw = await asyncio.wait_for(response.read(), timeout=timeout_s)
        except (TimeoutError, aiohttp.ClientError):
            raw = b""
        finally:
            response.release()
        raise status_error(response.status, raw, secrets, retry_after=response.headers.get("retry-after"))

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


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
    """POST a JSON document on a short-lived session (webhooks); True on a 2xx answer, never raises."""
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            async with session.post(url, data=orjson.dumps(payload), headers={"Content-Type": "application/json"}) as r:
                return r.status < 300
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
