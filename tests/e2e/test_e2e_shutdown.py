"""Graceful shutdown of the real `haimaker` command: SIGTERM while requests are in flight.

Guards a deploy or scale-down that cuts answers in half (in-flight requests must finish), a process that
hangs on exit (orchestrators then SIGKILL it and pending spend writes are lost), and a listener that keeps
accepting work it will not finish.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import orjson
import pytest
import yaml

from tests.e2e.e2e_stack import closed_port, mock_deployment, openai_deployment, proxy_config
from tests.support.fakes import FakeOpenAI
from tests.support.proxy import MASTER_KEY

pytestmark = pytest.mark.slow

LATENCY_MS = 2000  # long enough for the refusal check to land while both requests still run


def _haimaker_command() -> list[str]:
    script = Path(sys.executable).with_name("haimaker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "haimaker"]


def _is_refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return False
    except ConnectionRefusedError:
        return True


def _send_raw_chat(port: int, model: str) -> socket.socket:
    """Write a whole chat request on a fresh connection and return the socket (the answer is read later)."""
    body = orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}]})
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {MASTER_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head.encode() + body)
    return sock


def _read_status(sock: socket.socket) -> tuple[int, bytes]:
    with sock:
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


@pytest.fixture
def served(tmp_path: Path, openai_upstream: FakeOpenAI) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`haimaker --config … --port <free>` as a child process, up and answering."""
    config = proxy_config(
        [
            mock_deployment("slow-mock", mock_latency_ms=LATENCY_MS),
            openai_deployment("slow-upstream", openai_upstream, upstream_model="gpt-4o"),
        ]
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    port = closed_port()
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PORT")}
    log = (tmp_path / "server.log").open("wb")
    process = subprocess.Popen(
        [*_haimaker_command(), "--config", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(timeout=1) as http:
            while True:
                if process.poll() is not None:
                    pytest.fail(f"haimaker exited at startup: {(tmp_path / 'server.log').read_text()}")
                try:
                    if http.get(f"http://127.0.0.1:{port}/health/liveliness").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("haimaker did not start within 30 s")
                time.sleep(0.05)
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        log.close()


def test_sigterm_lets_in_flight_requests_finish_then_exits_cleanly(
    served: tuple[subprocess.Popen[bytes], int], openai_upstream: FakeOpenAI, tmp_path: Path
) -> None:
    process, port = served
    openai_upstream.behavior = openai_upstream.behavior.replace(delay_s=LATENCY_MS / 1000)
    outcome: dict[str, object] = {}

    def call_through_sdk() -> None:
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=MASTER_KEY, max_retries=0) as client:
            try:
                reply = client.chat.completions.create(
                    model="slow-upstream", messages=[{"role": "user", "content": "hi"}]
                )
                outcome["content"] = reply.choices[0].message.content
            except Exception as exc:  # reported by the assertions below
                outcome["error"] = exc
        outcome["finished_at"] = time.monotonic()

    # The mock request is written first, on its own connection, so it is accepted before the SDK's; the
    # fake upstream seeing the SDK's request proves the proxy is serving both when the signal lands.
    mock_socket = _send_raw_chat(port, "slow-mock")
    caller = threading.Thread(target=call_through_sdk)
    caller.start()
    openai_upstream.wait_until_sync(lambda s: s.in_flight >= 1, timeout_s=10)
    signalled_at = time.monotonic()
    process.send_signal(signal.SIGTERM)

    # The listener closes at once: new connections are refused while the old requests are still running.
    refused_at = None
    while time.monotonic() - signalled_at < 1.5:
        if _is_refused(port):
            refused_at = time.monotonic()
            break
        time.sleep(0.02)
    assert refused_at is not None, "still accepting connections after SIGTERM"

    mock_status, mock_body = _read_status(mock_socket)
    caller.join(10)
    assert not caller.is_alive()
    assert mock_status == 200, mock_body
    assert b"chat.completion" in mock_body
    assert "error" not in outcome, outcome.get("error")
    assert outcome["content"]
    assert refused_at < float(str(outcome["finished_at"])), "refusal was observed while a request was in flight"

    returncode = process.wait(timeout=10)
    exited_after_s = time.monotonic() - signalled_at
    log = (tmp_path / "server.log").read_text()
    assert returncode == 0, log
    assert exited_after_s < 5
    assert _is_refused(port)
    assert "Traceback" not in log, log
