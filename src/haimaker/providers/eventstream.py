"""The AWS event-stream binary framing (`application/vnd.amazon.eventstream`), decoded incrementally.

Bedrock's ConverseStream answers with this framing, not SSE. Each message is:

    total length (uint32 BE) | headers length (uint32 BE) | prelude CRC32 (of the 8 bytes before it)
    headers (name length uint8, name, value type uint8, value) | payload | message CRC32 (of everything before it)

Invariants: `EventStreamDecoder.feed()` takes bytes in pieces of any size (frame boundaries need not align with
them) and returns every message completed by them, in order; both CRCs are verified and a mismatch, an impossible
length or an unknown header type raises `EventStreamError` (the stream cannot be trusted past it); at most one
partial message is buffered, and never one longer than `max_message_bytes`.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import Final

# botocore's own limits for this framing (botocore/eventstream.py): 16 MiB payloads, 128 KiB of headers.
MAX_PAYLOAD_BYTES: Final = 16 * 1024 * 1024
MAX_HEADERS_BYTES: Final = 128 * 1024
_PRELUDE_BYTES: Final = 12  # total length, headers length, prelude CRC
_MIN_MESSAGE_BYTES: Final = _PRELUDE_BYTES + 4  # plus the message CRC
DEFAULT_MAX_MESSAGE_BYTES: Final = MAX_PAYLOAD_BYTES + MAX_HEADERS_BYTES + _MIN_MESSAGE_BYTES

HeaderValue = bool | int | bytes | str | uuid.UUID


class EventStreamError(ValueError):
    """The bytes are not a valid event stream (a CRC mismatch, an impossible length, an unknown header type)."""


@dataclass(frozen=True, slots=True)
class EventMessage:
    """One decoded message: its headers (`:event-type`, `:message-type`, ...) and its raw payload."""

    headers: dict[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str | None:
        """A string header's value, or None when absent or not a string."""
        value = self.headers.get(name)
        return value if isinstance(value, str) else None


class EventStreamDecoder:
    """Turns event-stream bytes, arriving in pieces of any size, into whole verified messages."""

    __slots__ = ("_buffer", "_failure", "_max_message_bytes")

    def __init__(self, *, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._max_message_bytes = max_message_bytes
        self._failure: EventStreamError | None = None

    @property
    def pending_bytes(self) -> int:
        """Bytes of a message not yet complete (0 at a message boundary)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[EventMessage]:
        """Add bytes; return the messages they complete.

        Raises `EventStreamError` at a corrupt message; the good messages before it in the same bytes are returned
        first, and the error is raised by the next `feed()` or by `close()`.
        """
        if self._failure is not None:
            raise self._failure
        self._buffer += data
        messages: list[EventMessage] = []
        offset = 0
        buffer = self._buffer
        try:
            while len(buffer) - offset >= _PRELUDE_BYTES:
                total, headers_length = _prelude(buffer, offset, self._max_message_bytes)
                if len(buffer) - offset < total:
                    break
                messages.append(_message(bytes(buffer[offset : offset + total]), headers_length))
                offset += total
        except EventStreamError as exc:
            self._failure = exc
            buffer.clear()
            if not messages:
                raise
            return messages
        if offset:
            # One deletion per feed, not per message: the work stays linear in what arrived.
            del buffer[:offset]
        return messages

    def close(self) -> None:
        """The bytes have ended: raise `EventStreamError` if they held a corrupt or unfinished message."""
        if self._failure is not None:
            raise self._failure
        if self._buffer:
            raise EventStreamError(f"the stream ended {len(self._buffer)} bytes into a message")


def _prelude(buffer: bytearray, offset: int, max_message_bytes: int) -> tuple[int, int]:
    total, headers_length, prelude_crc = struct.unpack_from(">III", buffer, offset)
    if zlib.crc32(buffer[offset : offset + 8]) != prelude_crc:
        raise EventStreamError("event-stream prelude CRC mismatch")
    if headers_length > MAX_HEADERS_BYTES:
        raise EventStreamError(f"event-stream headers of {headers_length} bytes exceed {MAX_HEADERS_BYTES}")
    if total < _MIN_MESSAGE_BYTES + headers_length or total > max_message_bytes:
        raise EventStreamError(f"event-stream message length {total} is impossible")
    return total, headers_length


def _message(raw: bytes, headers_length: int) -> EventMessage:
    (message_crc,) = struct.unpack_from(">I", raw, len(raw) - 4)
    if zlib.crc32(raw[:-4]) != message_crc:
        raise EventStreamError("event-stream message CRC mismatch")
    headers_end = _PRELUDE_BYTES + headers_length
    return EventMessage(_headers(raw[_PRELUDE_BYTES:headers_end]), raw[headers_end:-4])


def _headers(data: bytes) -> dict[str, HeaderValue]:
    headers: dict[str, HeaderValue] = {}
    pos = 0
    try:
        while pos < len(data):
            name_length = data[pos]
            name = data[pos + 1 : pos + 1 + name_length].decode("utf-8")
            pos += 1 + name_length
            kind = data[pos]
            pos += 1
            value, pos = _header_value(data, pos, kind)
            headers[name] = value
    except (IndexError, struct.error, UnicodeDecodeError) as exc:
        raise EventStreamError(f"event-stream headers are malformed: {exc}") from None
    if pos != len(data):
        raise EventStreamError("event-stream headers overrun their length")
    return headers


# Fixed-size header value types: (struct format, size).
_FIXED: Final = {2: (">b", 1), 3: (">h", 2), 4: (">i", 4), 5: (">q", 8), 8: (">q", 8)}


def _header_value(data: bytes, pos: int, kind: int) -> tuple[HeaderValue, int]:
    if kind == 0:
        return True, pos
    if kind == 1:
        return False, pos
    if kind in _FIXED:
        fmt, size = _FIXED[kind]
        if pos + size > len(data):
            raise EventStreamError("event-stream header value is truncated")
        (number,) = struct.unpack_from(fmt, data, pos)
        return int(number), pos + size  # type 8 is a timestamp in epoch milliseconds
    if kind in (6, 7):
        (length,) = struct.unpack_from(">H", data, pos)
        start = pos + 2
        if start + length > len(data):
            raise EventStreamError("event-stream header value is truncated")
        raw = data[start : start + length]
        return (raw.decode("utf-8") if kind == 7 else raw), start + length
    if kind == 9:
        if pos + 16 > len(data):
            raise EventStreamError("event-stream header value is truncated")
        return uuid.UUID(bytes=data[pos : pos + 16]), pos + 16
    raise EventStreamError(f"event-stream header type {kind} is unknown")
