"""One upstream cannot stall every request or take the process's memory (issue 10, finding 6).

Guards a single 20 MB SSE event without a blank line (it froze the event loop for 15 s, liveliness included, and took
RSS to 1.27 GB: the partial event was re-joined and re-scanned on every piece) and a 200 MB JSON body (read whole:
RSS 791 MB). The proxy runs as its own process, so that its liveliness and its peak memory (`VmHWM`) are its own;
the bounds are generous (the point is not 1 GB, not a number to the megabyte).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.e2e_stack import openai_deployment, proxy_config, sse_payloads
from tests.support.fakes import BEHAVIOR_FIELD, FakeOpenAI
from tests.support.process import ProxyProcess, proxy_process
from tests.support.proxy import MASTER_KEY

MESSAGES = [{"role": "user", "content": "hi"}]
MB = 1024 * 1024


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory, openai_server: FakeOpenAI) -> Iterator[ProxyProcess]:
    config = proxy_config([openai_deployment("gpt-4o", openai_server)], router_settings={"num_retries": 0})
    with proxy_process(tmp_path_factory.mktemp("bounds"), config) as running:
        yield running


def _peak_rss_mb(process: ProxyProcess) -> float:
    for line in Path(f"/proc/{process.process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


class _LivelinessProbe:
    """Polls `/health/liveliness` from its own thread while a test runs; keeps the slowest answer."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._stop = threading.Event()
        self.slowest_s = 0.0
        self.answers = 0
        self._answered = threading.Event()
        self._thread = threading.Thread(target=self._run, name="liveliness-probe", daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                assert client.get(self._url + "/health/liveliness").status_code == 200
                self.slowest_s = max(self.slowest_s, time.perf_counter() - started)
                self.answers += 1
                self._answered.set()
                self._stop.wait(0.02)

    def __enter__(self) -> _LivelinessProbe:
        self._thread.start()
        assert self._answered.wait(10), "the probe answers before the test starts"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _chat(proxy: ProxyProcess, behavior: dict[str, Any], **extra: Any) -> httpx.Response:
    body = {"model": "gpt-4o", "messages": MESSAGES, BEHAVIOR_FIELD: behavior, **extra}
    with httpx.Client(timeout=60) as client:
        return client.post(
            proxy.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {MASTER_KEY}"}
        )


def test_an_endless_sse_event_ends_the_stream_with_an_error_and_never_holds_the_loop(
    proxy: ProxyProcess, openai_upstream: FakeOpenAI
) -> None:
    with _LivelinessProbe(proxy.url) as probe:
        response = _chat(proxy, {"endless_event_bytes": 20 * MB}, stream=True)

    assert response.status_code == 200  # the stream had started
    payloads = sse_payloads(response.content)
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant", "the events before the fault were relayed"
    error = payloads[-1]["error"]
    assert error["code"] == "502"
    assert "larger than" in error["message"]
    openai_upstream.wait_disconnected_sync(timeout_s=10)  # the upstream connection was closed, not drained
    assert probe.slowest_s < 0.5, f"liveliness took {probe.slowest_s:.3f}s during the stream"
    assert _peak_rss_mb(proxy) < 600


def test_a_json_body_past_the_cap_is_a_502_and_never_read_whole(
    proxy: ProxyProcess, openai_upstream: FakeOpenAI
) -> None:
    with _LivelinessProbe(proxy.url) as probe:
        response = _chat(proxy, {"padding_bytes": 200 * MB})

    assert response.status_code == 502, response.text[:300]
    error = response.json()["error"]
    assert error["code"] == "502"
    assert "larger than" in error["message"]
    openai_upstream.wait_disconnected_sync(timeout_s=10)
    assert probe.slowest_s < 0.5, f"liveliness took {probe.slowest_s:.3f}s during the body"
    assert _peak_rss_mb(proxy) < 600, "a 200 MB body is dropped at the 128 MiB cap, never held and joined whole"


def test_answers_within_the_caps_still_pass(proxy: ProxyProcess, openai_upstream: FakeOpenAI) -> None:
    response = _chat(proxy, {"padding_bytes": 4 * MB})
    assert response.status_code == 200, response.text[:200]
    assert len(response.json()["padding"]) == 4 * MB
