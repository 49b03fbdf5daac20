"""A fake OpenAI upstream built to never be the bottleneck of a benchmark.

A raw `asyncio.Protocol` HTTP/1.1 server on uvloop: keep-alive, pipelining-safe parsing, and responses
precomputed at start, so a request costs a header scan and one or a few `transport.write` calls.

- `POST …/chat/completions` → a `chat.completion` JSON body with `usage`, or with `"stream": true` an SSE stream
  of `--chunks` content chunks (chunked transfer encoding, like OpenAI), plus the `choices: []` usage chunk when
  the request has `stream_options.include_usage`, then `data: [DONE]`.
- `GET …/models` and `GET /health` → small JSON bodies; anything else → 404 in OpenAI's error shape.

A stream is written with one `transport.write` by default: per-event writes cost the upstream a syscall per event
(about 4x its CPU per streamed request, measured), and on 2 shared cores every microsecond it spends is taken
from the proxy under test. `--per-event` writes each event separately, so the proxy sees them arrive as separate
reads, as from a real model.

Run it as its own process: `python -m bench.upstream --port 0 --chunks 20`. It prints `LISTENING <port>` on its
first stdout line, and on SIGTERM/SIGINT a `STATS {...}` line with the requests served and the CPU time they took,
i.e. its own ceiling per core. Requests are not authenticated: this is a load target, not a test double
(see `tests/support/fakes/` for that).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import socket
import sys
import time
from dataclasses import dataclass
from typing import cast

REPLY_WORDS = ("Hello", "from", "the", "benchmark", "upstream", "which", "answers", "fast")
PROMPT_TOKENS = 9


@dataclass(frozen=True, slots=True)
class Responses:
    """Every byte string the server sends, built once at start."""

    json_reply: bytes
    stream_head: bytes
    stream_events: tuple[bytes, ...]  # chunked-encoded SSE events, one per content/role/finish chunk
    stream_usage_event: bytes
    stream_done: bytes  # `data: [DONE]` plus the terminating zero-length chunk
    models: bytes
    health: bytes
    not_found: bytes
    bad_request: bytes


def _http(status: str, content_type: str, body: bytes) -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _sse(payload: dict[str, object]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def build_responses(chunks: int, model: str) -> Responses:
    """Precompute the replies for a stream of `chunks` content chunks."""
    words = [REPLY_WORDS[i % len(REPLY_WORDS)] for i in range(max(chunks, 1))]
    text = " ".join(words)
    usage = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": len(words),
        "total_tokens": PROMPT_TOKENS + len(words),
    }
    created = int(time.time())
    common = {"id": "chatcmpl-bench0000000000000000000000000", "created": created, "model": model}
    body = {
        **common,
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            **usage,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "system_fingerprint": "fp_bench",
    }
    chunk_base = {**common, "object": "chat.completion.chunk", "system_fingerprint": "fp_bench"}

    def event(delta: dict[str, object], finish: str | None) -> dict[str, object]:
        return {
            **chunk_base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    events = [event({"role": "assistant", "content": ""}, None)]
    events += [event({"content": (" " if i else "") + w}, None) for i, w in enumerate(words[:chunks])]
    events.append(event({}, "stop"))
    # Without include_usage OpenAI omits the `usage` key; with it, every chunk carries `"usage": null`. The bench
    # sends the same events either way (the key costs nothing to relay) and adds the usage chunk when asked.
    usage_event = {**chunk_base, "choices": [], "usage": usage}
    stream_head = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
        b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    models = {"object": "list", "data": [{"id": model, "object": "model", "created": created, "owned_by": "bench"}]}
    error = {"error": {"message": "Not found", "type": "invalid_request_error", "param": None, "code": None}}
    bad = {"error": {"message": "Bad request", "type": "invalid_request_error", "param": None, "code": None}}
    return Responses(
        json_reply=_http("200 OK", "application/json", json.dumps(body, separators=(",", ":")).encode()),
        stream_head=stream_head,
        stream_events=tuple(_chunk(_sse(e)) for e in events),
        stream_usage_event=_chunk(_sse(usage_event)),
        stream_done=_chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n",
        models=_http("200 OK", "application/json", json.dumps(models).encode()),
        health=_http("200 OK", "application/json", b'{"status":"ok"}'),
        not_found=_http("404 Not Found", "application/json", json.dumps(error).encode()),
        bad_request=_http("400 Bad Request", "application/json", json.dumps(bad).encode()),
    )


class Counter:
    """Requests served, shared by every connection."""

    __slots__ = ("requests",)

    def __init__(self) -> None:
        self.requests = 0


class UpstreamProtocol(asyncio.Protocol):
    """One client connection: parse requests as they arrive, answer each from the precomputed bytes."""

    __slots__ = ("_buffer", "_coalesce", "_counter", "_responses", "_transport")

    def __init__(self, responses: Responses, counter: Counter, coalesce: bool) -> None:
        self._responses = responses
        self._counter = counter
        self._coalesce = coalesce
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buffer[:end])
            length = 0
            lower = head.lower()
            at = lower.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = lower.find(b"\r\n", at + 2)
                length = int(lower[at + 17 : stop if stop >= 0 else len(lower)])
            if len(buffer) < end + 4 + length:
                return
            body = bytes(buffer[end + 4 : end + 4 + length])
            del buffer[: end + 4 + length]
            close = b"\r\nconnection: close" in lower
            self._answer(head, body)
            if close and self._transport is not None:
                self._transport.close()
                return

    def _answer(self, head: bytes, body: bytes) -> None:
        transport = self._transport
        if transport is None:
            return
        responses = self._responses
        line_end = head.find(b"\r\n")
        request_line = head[: line_end if line_end >= 0 else len(head)]
        parts = request_line.split(b" ")
        if len(parts) < 2:
            transport.write(responses.bad_request)
            return
        method, path = parts[0], parts[1].split(b"?", 1)[0]
        self._counter.requests += 1
        if method == b"POST" and path.endswith(b"/chat/completions"):
            if _wants_stream(body):
                self._stream(transport, _wants_usage(body))
            else:
                transport.write(responses.json_reply)
        elif method == b"GET" and path.endswith(b"/models"):
            transport.write(responses.models)
        elif method == b"GET" and path.startswith(b"/health"):
            transport.write(responses.health)
        else:
            transport.write(responses.not_found)

    def _stream(self, transport: asyncio.Transport, with_usage: bool) -> None:
        responses = self._responses
        tail = (responses.stream_usage_event + responses.stream_done) if with_usage else responses.stream_done
        if self._coalesce:
            transport.write(responses.stream_head + b"".join(responses.stream_events) + tail)
            return
        transport.write(responses.stream_head)
        for event in responses.stream_events:
            transport.write(event)
        transport.write(tail)


def _compact(body: bytes) -> bytes:
    return body.replace(b" ", b"").replace(b"\n", b"").replace(b"\t", b"")


def _wants_stream(body: bytes) -> bool:
    # Bodies are small; a byte search is enough for a load target and avoids decoding JSON per request.
    if b'"stream"' not in body:
        return False
    return b'"stream":true' in _compact(body)


def _wants_usage(body: bytes) -> bool:
    return b'"include_usage"' in body and b'"include_usage":true' in _compact(body)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve(port: int, chunks: int, model: str, coalesce: bool, backlog: int) -> None:
    """Serve until SIGTERM/SIGINT, then print the `STATS` line."""
    loop = asyncio.get_running_loop()
    responses = build_responses(chunks, model)
    counter = Counter()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = await loop.create_server(
        lambda: UpstreamProtocol(responses, counter, coalesce), sock=sock, backlog=backlog
    )
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    print(f"LISTENING {sock.getsockname()[1]}", flush=True)
    started_cpu, started = _cpu_seconds(), time.monotonic()
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()
    cpu = _cpu_seconds() - started_cpu
    per_request_us = cpu / counter.requests * 1e6 if counter.requests else 0.0
    stats = {
        "requests": counter.requests,
        "cpu_s": round(cpu, 3),
        "wall_s": round(time.monotonic() - started, 3),
        "cpu_us_per_request": round(per_request_us, 1),
        "ceiling_rps_per_core": round(1e6 / per_request_us) if per_request_us else None,
    }
    print("STATS " + json.dumps(stats), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`python -m bench.upstream`)."""
    parser = argparse.ArgumentParser(prog="python -m bench.upstream", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 picks a free one)")
    parser.add_argument("--chunks", type=int, default=20, help="content chunks per streamed reply")
    parser.add_argument("--model", default="gpt-3.5-turbo", help="model name reported in replies")
    parser.add_argument("--per-event", action="store_true", help="write each SSE event separately (default: one write)")
    parser.add_argument("--backlog", type=int, default=1024)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        print("uvloop not installed; using the default event loop", file=sys.stderr)
        asyncio.run(serve(args.port, args.chunks, args.model, not args.per_event, args.backlog))
    else:
        uvloop.run(serve(args.port, args.chunks, args.model, not args.per_event, args.backlog))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
