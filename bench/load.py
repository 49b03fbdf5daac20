"""Load generator: a raw asyncio HTTP/1.1 keep-alive client on uvloop, fixed concurrency, loopback only.

Each of `concurrency` connections sends one request, waits for the whole response, records its latency and sends
the next (closed loop). A run stops at `duration_s` or after `max_requests` requests, whichever comes first, then
waits up to `drain_s` for the requests still in flight. Requests finished during the first `warmup_s` are not
measured. Bodies are templated: every `{customer}` in the template is replaced by `<prefix><i>` with `i` rotating
over `customers` values, and bodies are rendered once before the run, so rotating over 10,000 customers costs the
generator nothing per request.

Streaming responses (SSE, chunked or close-delimited) are read to their end and count as errors unless they
contain `data: [DONE]`. Responses with a status other than 2xx count as errors by status; broken connections count
as `conn` and are reopened.

Run one measurement from the command line (`python -m bench.load --url … --concurrency 16 --duration 5`), or
`--serve` to read one JSON `LoadSpec` per stdin line and answer one JSON `LoadResult` per stdout line, which is how
`bench.run` drives it without paying a process start per scenario. Only loopback targets are accepted: this tool
must never be pointed at someone else's server.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import ipaddress
import json
import resource
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

DEFAULT_BODY = '{"model":"fake-gpt","messages":[{"role":"user","content":"hello"}]}'


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """One measurement."""

    url: str
    concurrency: int = 1
    duration_s: float = 5.0
    max_requests: int = 1_000_000
    warmup_s: float = 0.0
    drain_s: float = 10.0
    body: str = DEFAULT_BODY  # JSON template; `{customer}` is substituted
    customers: int = 0  # 0: the template is sent as is
    customer_prefix: str = "cust-"
    customer_step: int = 1  # customer ids are prefix + i * step: a sample spread over a larger id space
    stream: bool = False  # only changes how the response is checked; put `"stream": true` in the body
    headers: dict[str, str] = field(default_factory=dict)
    connect_timeout_s: float = 5.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LoadSpec:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown load spec fields: {sorted(unknown)}")
        return cls(**data)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What one measurement saw. Latencies are in milliseconds; `rps` counts measured (post-warm-up) requests."""

    requests: int  # measured requests (after warm-up), successful or not
    total_requests: int  # every completed request, warm-up included (for CPU-per-request accounting)
    ok: int
    errors: dict[str, int]
    elapsed_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    generator_cpu_s: float

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_loopback(host: str) -> None:
    """Refuse any target that does not resolve only to loopback addresses.

    Raises:
        ValueError: the host resolves to a non-loopback address (or does not resolve).
    """
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_loopback:
            raise ValueError(f"refusing non-loopback target {host!r} ({address}); bench/load.py is loopback only")


def render_requests(spec: LoadSpec, host_header: str, path: str) -> list[bytes]:
    """Build the raw HTTP requests, one per distinct customer (or a single one)."""
    extra = "".join(f"{name}: {value}\r\n" for name, value in spec.headers.items())
    bodies: list[str]
    if spec.customers > 0:
        bodies = [
            spec.body.replace("{customer}", f"{spec.customer_prefix}{i * spec.customer_step}")
            for i in range(spec.customers)
        ]
    else:
        bodies = [spec.body]
    requests = []
    for body in bodies:
        raw = body.encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host_header}\r\nContent-Type: application/json\r\n"
            f"Accept: */*\r\n{extra}Content-Length: {len(raw)}\r\n\r\n"
        )
        requests.append(head.encode() + raw)
    return requests


class _Run:
    """State shared by the connections of one measurement."""

    def __init__(self, spec: LoadSpec, requests: list[bytes]) -> None:
        self.spec = spec
        self.requests = requests
        self.next_index = 0
        self.issued = 0
        self.started = time.perf_counter()
        self.warm_at = self.started + spec.warmup_s
        self.deadline = self.started + spec.duration_s
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.ok = 0
        self.total = 0
        self.measured_errors = 0
        self.in_flight = 0
        self.last_done = self.started
        self.connections: set[_Connection] = set()

    def take_request(self) -> bytes | None:
        """The next request to send, or None when the run is over."""
        if self.issued >= self.spec.max_requests or time.perf_counter() >= self.deadline:
            return None
        self.issued += 1
        request = self.requests[self.next_index]
        self.next_index = (self.next_index + 1) % len(self.requests)
        self.in_flight += 1
        return request

    def finish(self, sent_at: float, error: str | None) -> None:
        now = time.perf_counter()
        self.in_flight -= 1
        self.total += 1
        self.last_done = now
        if now >= self.warm_at:
            if error is None:
                self.ok += 1
                self.latencies.append((now - sent_at) * 1000.0)
            else:
                self.errors[error] = self.errors.get(error, 0) + 1


class _Connection(asyncio.Protocol):
    """One keep-alive connection running requests back to back, parsing responses incrementally."""

    def __init__(self, run: _Run, stream: bool) -> None:
        self.run = run
        self.stream = stream
        self.transport: asyncio.Transport | None = None
        self.closed = asyncio.get_running_loop().create_future()
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.busy = False
        self._reset()

    def _reset(self) -> None:
        self.state = "head"
        self.status = 0
        self.remaining = 0  # body length (length mode)
        self.pos = 0  # chunked mode: where the body's data ends (the last-chunk line), once known
        self.scan_from = 0  # chunked mode: where to resume looking for the end marker
        self.mode = "length"  # "length", "chunked" or "eof"
        self.saw_done = False
        self.keep_alive = True

    # -- protocol callbacks ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.run.connections.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.run.connections.discard(self)
        if self.busy:
            if self.state == "body" and self.mode == "eof":
                self.saw_done = self._has_done(self.buffer, len(self.buffer), chunked=False)
                self.buffer.clear()
                self._complete()
            else:
                self.busy = False
                self.run.finish(self.sent_at, "conn")
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            self._parse()
        except (ValueError, IndexError):
            if self.busy:
                self.busy = False
                self.run.finish(self.sent_at, "parse")
            if self.transport is not None:
                self.transport.close()

    # -- request/response cycle ------------------------------------------------------------------------------

    def send_next(self) -> None:
        transport = self.transport
        if transport is None:
            return
        request = self.run.take_request()
        if request is None:
            transport.close()
            return
        self._reset()
        self.busy = True
        self.sent_at = time.perf_counter()
        transport.write(request)

    def _complete(self) -> None:
        error: str | None = None
        if not 200 <= self.status < 300:
            error = str(self.status)
        elif self.stream and not self.saw_done:
            error = "no-done"
        self.busy = False
        self.run.finish(self.sent_at, error)
        if self.keep_alive and self.transport is not None:
            self.send_next()
        elif self.transport is not None:
            self.transport.close()

    def _parse(self) -> None:
        # The body stays in the buffer until the response is complete, then goes in one `del`: no per-chunk copies.
        buffer = self.buffer
        while self.busy:
            if self.state == "head":
                end = buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._parse_head(bytes(buffer[:end]))
                del buffer[: end + 4]
                self.state = "body"
                self.pos = self.scan_from = 0
                continue
            if self.mode == "length":
                if len(buffer) < self.remaining:
                    return
                self.saw_done = self._has_done(buffer, self.remaining, chunked=False)
                del buffer[: self.remaining]
                self._complete()
            elif self.mode == "eof":
                return  # completed by connection_lost
            else:
                end = self._chunked_end()
                if end < 0:
                    return
                self.saw_done = self._has_done(buffer, self.pos, chunked=True)
                del buffer[:end]
                self._complete()

    def _chunked_end(self) -> int:
        """Return the end offset of the whole chunked body, or -1 if it has not all arrived; set `pos` to the data end.

        Fast path: find the last-chunk marker (`CRLF 0 CRLF CRLF`) with one C-level search instead of walking every
        chunk header in Python (a third of the generator's CPU per stream). SSE data cannot contain that sequence
        (it would be an event line reading `0`). A body whose last chunk has extensions or trailers does not match;
        it is parsed exactly once it looks complete (ends with an empty line).
        """
        buffer = self.buffer
        if buffer.startswith(b"0\r\n\r\n"):
            self.pos = 0
            return 5
        marker = buffer.find(b"\r\n0\r\n\r\n", self.scan_from)
        if marker >= 0:
            self.pos = marker + 2
            return marker + 9
        self.scan_from = max(len(buffer) - 8, 0)
        return self._walk_chunks() if buffer.endswith(b"\r\n\r\n") else -1

    def _walk_chunks(self) -> int:
        """The exact parse: advance over complete chunks from the start of the body."""
        buffer = self.buffer
        pos = 0
        while True:
            line_end = buffer.find(b"\r\n", pos)
            if line_end < 0:
                break
            size = int(bytes(buffer[pos:line_end]).split(b";", 1)[0], 16)
            if size == 0:
                trailer_end = buffer.find(b"\r\n\r\n", line_end)
                if trailer_end < 0:
                    break
                self.pos = pos  # the last-chunk line: data ends here
                return trailer_end + 4
            next_pos = line_end + 2 + size + 2
            if next_pos > len(buffer):
                break
            pos = next_pos
        return -1

    def _has_done(self, buffer: bytearray, end: int, *, chunked: bool) -> bool:
        if not self.stream:
            return False
        if buffer.find(b"data: [DONE]", 0, end) >= 0:
            return True
        if not chunked:
            return False
        # The sentinel may straddle a chunk boundary: search the de-chunked body (rare, so not optimised).
        data = bytearray()
        pos = 0
        while pos < end:
            line_end = buffer.find(b"\r\n", pos)
            size = int(bytes(buffer[pos:line_end]).split(b";", 1)[0], 16)
            data += buffer[line_end + 2 : line_end + 2 + size]
            pos = line_end + 2 + size + 2
        return b"data: [DONE]" in data

    def _parse_head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0].split(b" ", 2)[1])
        self.mode = "eof"
        self.remaining = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            value = value.strip().lower()
            if name == b"content-length":
                self.mode = "length"
                self.remaining = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value:
                self.mode = "chunked"
            elif name == b"connection" and value == b"close":
                self.keep_alive = False
        if self.mode == "eof":
            self.keep_alive = False
        if self.status in (204, 304) or 100 <= self.status < 200:
            self.mode, self.remaining = "length", 0


async def run_load(spec: LoadSpec) -> LoadResult:
    """Run one measurement against `spec.url` and return what it saw.

    Raises:
        ValueError: the URL is not plain HTTP to a loopback host.
    """
    parts = urlsplit(spec.url)
    host = parts.hostname
    if parts.scheme != "http" or not host:
        raise ValueError(f"only http:// URLs are supported: {spec.url!r}")
    check_loopback(host)
    port = parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    requests = render_requests(spec, parts.netloc, path)
    loop = asyncio.get_running_loop()
    cpu_before = _cpu_seconds()
    run = _Run(spec, requests)

    async def worker() -> None:
        while True:
            if run.issued >= spec.max_requests or time.perf_counter() >= run.deadline:
                return
            try:
                _, connection = await asyncio.wait_for(
                    loop.create_connection(lambda: _Connection(run, spec.stream), host, port),
                    spec.connect_timeout_s,
                )
            except (OSError, TimeoutError):
                run.errors["connect"] = run.errors.get("connect", 0) + 1
                await asyncio.sleep(0.05)
                continue
            await connection.closed

    workers = [asyncio.ensure_future(worker()) for _ in range(spec.concurrency)]
    remaining = spec.duration_s + spec.drain_s
    _, pending = await asyncio.wait(workers, timeout=remaining)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending)
        run.errors["timeout"] = run.errors.get("timeout", 0) + run.in_flight
    for connection in list(run.connections):
        if connection.transport is not None:
            connection.transport.abort()
    await asyncio.sleep(0)  # let connection_lost run for the aborted transports
    window_start = run.warm_at if run.last_done > run.warm_at else run.started
    elapsed = max(run.last_done - window_start, 1e-9)
    latencies = sorted(run.latencies)
    measured = run.ok + sum(v for k, v in run.errors.items() if k not in ("connect", "timeout"))
    return LoadResult(
        requests=measured,
        total_requests=run.total,
        ok=run.ok,
        errors=dict(sorted(run.errors.items())),
        elapsed_s=round(elapsed, 4),
        rps=round(run.ok / elapsed, 1),
        p50_ms=_percentile(latencies, 0.50),
        p90_ms=_percentile(latencies, 0.90),
        p99_ms=_percentile(latencies, 0.99),
        max_ms=round(latencies[-1], 3) if latencies else 0.0,
        generator_cpu_s=round(_cpu_seconds() - cpu_before, 3),
    )


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return round(sorted_values[index], 3)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def serve_stdin() -> None:
    """Answer one JSON `LoadSpec` per stdin line with one JSON `LoadResult` (or `{"error": …}`) per stdout line."""
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if not line.strip():
            continue
        try:
            result: dict[str, Any] = (await run_load(LoadSpec.from_json(json.loads(line)))).to_json()
        except (ValueError, TypeError) as exc:
            result = {"error": str(exc)}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


def _run(main: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return asyncio.run(main)
    return uvloop.run(main)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`python -m bench.load`)."""
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", action="store_true", help="read JSON specs from stdin, one result per line")
    parser.add_argument("--url", help="e.g. http://127.0.0.1:4000/v1/chat/completions")
    parser.add_argument("--concurrency", "-c", type=int, default=1)
    parser.add_argument("--duration", "-d", type=float, default=5.0, help="seconds")
    parser.add_argument("--requests", "-n", type=int, default=1_000_000, help="stop after this many requests")
    parser.add_argument("--warmup", type=float, default=0.0, help="seconds not measured at the start")
    parser.add_argument("--body", default=DEFAULT_BODY, help="JSON body template; {customer} is substituted")
    parser.add_argument("--customers", type=int, default=0, help="rotate {customer} over this many values")
    parser.add_argument("--stream", action="store_true", help='add "stream": true and read SSE to [DONE]')
    parser.add_argument("--header", "-H", action="append", default=[], help="extra header, 'Name: value'")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    if args.serve:
        _run(serve_stdin())
        return 0
    if not args.url:
        parser.error("--url is required (or --serve)")
    body = args.body
    if args.stream and '"stream"' not in body:
        body = body.rstrip()[:-1] + ',"stream":true}'
    headers = dict(h.split(":", 1) for h in args.header)
    spec = LoadSpec(
        url=args.url,
        concurrency=args.concurrency,
        duration_s=args.duration,
        max_requests=args.requests,
        warmup_s=args.warmup,
        body=body,
        customers=args.customers,
        stream=args.stream,
        headers={k.strip(): v.strip() for k, v in headers.items()},
    )
    try:
        result = _run(run_load(spec))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_json()))
    else:
        print(
            f"{result.rps:,.0f} req/s  ok={result.ok}  errors={result.errors or 0}  "
            f"p50={result.p50_ms:.2f}ms p90={result.p90_ms:.2f}ms p99={result.p99_ms:.2f}ms max={result.max_ms:.2f}ms  "
            f"generator cpu={result.generator_cpu_s:.2f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
