"""`EventStreamDecoder`: AWS event-stream frames out of pieces of any size, both CRCs verified.

Guards a decoder that loses or merges messages when frames straddle TCP pieces, passes a corrupted message on as
if it were whole, or buffers without bound.
"""

from __future__ import annotations

import itertools
import struct
import uuid
import zlib
from typing import cast

import pytest
from botocore.eventstream import EventStreamBuffer
from hypothesis import given, settings
from hypothesis import strategies as st

from haimaker.providers.eventstream import EventStreamDecoder, EventStreamError
from tests.support.fakes.bedrock_wire import encode_message, event, exception

MESSAGES = [
    event("messageStart", b'{"role":"assistant"}'),
    event("contentBlockDelta", b'{"contentBlockIndex":0,"delta":{"text":"Hello "}}'),
    event("contentBlockDelta", '{"contentBlockIndex":0,"delta":{"text":"w\u00f6rld"}}'.encode()),
    event("messageStop", b'{"stopReason":"end_turn"}'),
    exception("throttlingException", b'{"message":"Too many requests"}'),
]
STREAM = b"".join(MESSAGES)


def _decoded(pieces: list[bytes]) -> list[tuple[str | None, bytes]]:
    decoder = EventStreamDecoder()
    out = []
    for piece in pieces:
        out += [(m.header(":event-type") or m.header(":exception-type"), m.payload) for m in decoder.feed(piece)]
    assert decoder.pending_bytes == 0
    return out


EXPECTED = [
    ("messageStart", b'{"role":"assistant"}'),
    ("contentBlockDelta", b'{"contentBlockIndex":0,"delta":{"text":"Hello "}}'),
    ("contentBlockDelta", '{"contentBlockIndex":0,"delta":{"text":"w\u00f6rld"}}'.encode()),
    ("messageStop", b'{"stopReason":"end_turn"}'),
    ("throttlingException", b'{"message":"Too many requests"}'),
]


def test_whole_stream_in_one_piece_decodes_every_message_in_order() -> None:
    assert _decoded([STREAM]) == EXPECTED


def test_stream_fed_one_byte_at_a_time_decodes_the_same_messages() -> None:
    assert _decoded([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_any_split_of_the_stream_decodes_the_same_messages(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    assert _decoded([STREAM[a:b] for a, b in itertools.pairwise(bounds)]) == EXPECTED


def test_headers_of_every_type_are_read() -> None:
    headers = (
        b"\x01a\x00"  # true
        + b"\x01b\x01"  # false
        + b"\x01c\x02\xff"  # byte -1
        + b"\x01d\x03"
        + struct.pack(">h", -2)
        + b"\x01e\x04"
        + struct.pack(">i", 70000)
        + b"\x01f\x05"
        + struct.pack(">q", 2**40)
        + b"\x01g\x06"
        + struct.pack(">H", 3)
        + b"\x00\x01\x02"
        + b"\x01h\x07"
        + struct.pack(">H", 2)
        + b"hi"
        + b"\x01i\x08"
        + struct.pack(">q", 1700000000000)
        + b"\x01j\x09"
        + uuid.UUID(int=7).bytes
    )
    total = 12 + len(headers) + 2 + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    raw = prelude + headers + b"{}"
    raw += struct.pack(">I", zlib.crc32(raw))
    (message,) = EventStreamDecoder().feed(raw)
    assert message.headers == {
        "a": True,
        "b": False,
        "c": -1,
        "d": -2,
        "e": 70000,
        "f": 2**40,
        "g": b"\x00\x01\x02",
        "h": "hi",
        "i": 1700000000000,
        "j": uuid.UUID(int=7),
    }
    assert message.payload == b"{}"
    assert message.header("a") is None  # not a string header


def test_our_frames_are_the_ones_botocore_decodes() -> None:
    """The fake's encoder speaks the real framing: botocore's own parser reads what our decoder reads."""
    buffer = EventStreamBuffer()
    buffer.add_data(STREAM)
    theirs = []
    for message in buffer:
        headers = cast("dict[str, str]", message.headers)  # botocore-stubs wrongly types it as int
        theirs.append((headers.get(":event-type") or headers.get(":exception-type"), message.payload))
    assert theirs == EXPECTED


def test_corrupted_payload_fails_the_message_crc() -> None:
    raw = bytearray(MESSAGES[1])
    raw[-6] ^= 0x01  # a payload byte
    with pytest.raises(EventStreamError, match="message CRC"):
        EventStreamDecoder().feed(bytes(raw))


def test_corrupted_length_fails_the_prelude_crc_before_anything_is_buffered() -> None:
    raw = bytearray(MESSAGES[0])
    raw[3] ^= 0x10  # the total length
    with pytest.raises(EventStreamError, match="prelude CRC"):
        EventStreamDecoder().feed(bytes(raw))


def test_message_longer_than_the_cap_is_refused_at_its_prelude() -> None:
    big = encode_message({":event-type": "x"}, b"x" * 5000)
    with pytest.raises(EventStreamError, match="impossible"):
        EventStreamDecoder(max_message_bytes=4096).feed(big[:12])


def test_unknown_header_type_is_refused() -> None:
    headers = b"\x01a\x0a"
    total = 12 + len(headers) + 4
    prelude = struct.pack(">II", total, len(headers))
    prelude += struct.pack(">I", zlib.crc32(prelude))
    raw = prelude + headers
    raw += struct.pack(">I", zlib.crc32(raw))
    with pytest.raises(EventStreamError, match="type 10"):
        EventStreamDecoder().feed(raw)


def test_partial_message_is_held_until_its_last_byte() -> None:
    decoder = EventStreamDecoder()
    assert decoder.feed(MESSAGES[0][:-1]) == []
    assert decoder.pending_bytes == len(MESSAGES[0]) - 1
    assert len(decoder.feed(MESSAGES[0][-1:] + MESSAGES[1][:5])) == 1
    assert decoder.pending_bytes == 5


def test_good_messages_before_a_corrupt_one_are_returned_then_the_error_is_raised() -> None:
    raw = bytearray(MESSAGES[2])
    raw[-6] ^= 0x01
    decoder = EventStreamDecoder()
    assert len(decoder.feed(MESSAGES[0] + MESSAGES[1] + bytes(raw))) == 2
    with pytest.raises(EventStreamError, match="message CRC"):
        decoder.feed(MESSAGES[3])
    with pytest.raises(EventStreamError, match="message CRC"):
        decoder.close()


def test_close_in_the_middle_of_a_message_is_an_error() -> None:
    decoder = EventStreamDecoder()
    decoder.feed(MESSAGES[0] + MESSAGES[1][:9])
    with pytest.raises(EventStreamError, match="9 bytes into a message"):
        decoder.close()
    EventStreamDecoder().close()  # at a boundary: nothing to report
