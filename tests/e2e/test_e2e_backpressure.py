"""A client that does not drain a stream holds the upstream back; the proxy never stores the stream (issue 11).

The proxy runs as its own process (its memory is then its own, read from /proc), the fake upstream streams 50 MB
of SSE as fast as the proxy takes it, and the client is a raw socket with a tiny receive buffer that reads a byte
every half second. Without back-pressure the proxy would pull the whole 50 MB over loopback in well under a second
and hold it; with it, the upstream connection is paused once about a megabyte waits (`http1._HIGH_WATER_BYTES`),
so the proxy's memory stays flat and the upstream's stream stays unfinished.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.e2e.e2e_stack import openai_deployment, proxy_config
from tests.support.fakes import Behavior, FakeOpenAI
from tests.support.process import ProxyProcess, proxy_process
from tests.support.proxy import MASTER_KEY

MB = 1024 * 1024
STREAM_BYTES = 50 * MB
SLOW_READ_S = 4.0
MAX_GROWTH_MB = 30


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI) -> Iterator[ProxyProcess]:
    config = proxy_config([openai_deployment("gpt-4o", openai_server)], router_settings={"num_retries": 0})
    with proxy_process(tmp_path_factory.mktemp("backpressure"), config) as running:
        yield running


def _rss_mb(process: ProxyProcess) -> float:
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/<pid>/status")


def _request(body: dict[str, object]) -> bytes:
    payload = orjson.dumps(body)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {MASTER_KEY}\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


@pytest.mark.slow
def test_a_client_reading_a_byte_at_a_time_from_a_50_mb_stream_keeps_the_proxy_memory_flat(
    proxy: ProxyProcess, openai_upstream: FakeOpenAI
) -> None:
    messages = [{"role": "user", "content": "hi"}]
    with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {MASTER_KEY}"}) as client:
        # Warm the request path (imports, pools, the tokenizer) so that the baseline is the serving process.
        warm = client.post(proxy.url + "/v1/chat/completions", json={"model": "gpt-4o", "messages": messages})
        assert warm.status_code == 200, warm.text
    word = "x" * (64 * 1024)
    openai_upstream.script(Behavior(reply=" ".join([word] * (STREAM_BYTES // len(word)))))
    baseline_mb = _rss_mb(proxy)

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window stays small
        sock.settimeout(10)
        sock.connect(("127.0.0.1", proxy.port))
        sock.sendall(_request({"model": "gpt-4o", "messages": messages, "stream": True}))
        received = sock.recv(1)
        assert received == b"H", "the stream's head arrives"
        openai_upstream.wait_until_sync(lambda stats: stats.open_streams == 1)
        peak_mb = baseline_mb
        deadline = time.monotonic() + SLOW_READ_S
        while time.monotonic() < deadline:
            received += sock.recv(1)
            peak_mb = max(peak_mb, _rss_mb(proxy))
            time.sleep(0.5)
        stats = openai_upstream.stats

    growth_mb = peak_mb - baseline_mb
    assert growth_mb < MAX_GROWTH_MB, f"the proxy grew by {growth_mb:.1f} MB while the client lagged"
    assert stats.streams_completed == 0, "the upstream was held back, not drained into the proxy"
    # The client hung up: the proxy lets the upstream go too.
    openai_upstream.wait_stream_cancelled_sync(timeout_s=10)
