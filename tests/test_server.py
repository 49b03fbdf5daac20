"""Client read deadlines of the server (slowloris), over raw sockets against the proxy as the CLI serves it.

Regression for issue 10 finding 10: a client sending partial headers, or a body at 1 byte per 2 s, kept its
socket open indefinitely. Now the headers must arrive within `client_header_timeout_s` (else the connection is
closed) and the body within `client_body_timeout_s` after them (else 408, then close). A normal client, a slow
upstream and an idle keep-alive connection are not affected.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.process import proxy_process
from tests.support.proxy import MASTER_KEY, RunningProxy, base_config, running_proxy

TIMEOUT_S = 1.0
SLACK_S = 1.5
CHAT = json.dumps({"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}).encode()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    config = base_config(
        model_list=[
            {"model_name": "gpt-3.5-turbo", "litellm_params": {"model": "mock/gpt-3.5-turbo"}},
            # Answers after twice the client timeouts: the deadlines cover the client's sending, not our work.
            {"model_name": "slow", "litellm_params": {"model": "mock/slow", "mock_latency_ms": 2000 * TIMEOUT_S}},
        ],
        general_settings={"client_header_timeout_s": TIMEOUT_S, "client_body_timeout_s": TIMEOUT_S},
    )
    with running_proxy(tmp_path_factory.mktemp("server"), config) as running:
        yield running


def _connect(proxy: RunningProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=TIMEOUT_S + SLACK_S + 5)
    return sock


def _request(proxy: RunningProxy, body: bytes = CHAT, path: str = "/v1/chat/completions") -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {proxy.master_key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def _read_until_closed(sock: socket.socket, deadline_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took (fails past deadline_s)."""
    started = time.monotonic()
    received = b""
    while True:
        sock.settimeout(max(0.01, deadline_s - (time.monotonic() - started)))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            pytest.fail(f"the connection was still open after {deadline_s} s (received {received!r})")
        if not chunk:
            return received, time.monotonic() - started
        received += chunk


def _read_responses(sock: socket.socket, count: int = 1) -> list[bytes]:
    """`count` whole responses with a content-length, in order (the connection stays open)."""
    received = b""

    def more() -> bytes:
        chunk = sock.recv(65536)
        if not chunk:
            pytest.fail(f"the connection closed after {received!r}")
        return chunk

    responses: list[bytes] = []
    while len(responses) < count:
        while b"\r\n\r\n" not in received:
            received += more()
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = next(int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length"))
        while len(rest) < length:
            rest += more()
        responses.append(head + b"\r\n\r\n" + rest[:length])
        received = rest[length:]
    return responses


def _read_response(sock: socket.socket) -> bytes:
    return _read_responses(sock)[0]


def test_partial_headers_are_closed_after_the_header_timeout(proxy: RunningProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        received, took_s = _read_until_closed(sock, TIMEOUT_S + SLACK_S)
    assert received == b""  # no answer to a request that never finished arriving
    assert took_s >= TIMEOUT_S * 0.9


def test_headers_dripped_byte_by_byte_are_closed_after_the_header_timeout(proxy: RunningProxy) -> None:
    request = _request(proxy)
    with _connect(proxy) as sock:
        started = time.monotonic()
        try:
            for byte in request[:40]:
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass  # closed under us: what we want
        _, _ = _read_until_closed(sock, TIMEOUT_S + SLACK_S)
        assert time.monotonic() - started < TIMEOUT_S + SLACK_S


def test_a_connection_that_sends_nothing_is_closed(proxy: RunningProxy) -> None:
    with _connect(proxy) as sock:
        received, _ = _read_until_closed(sock, TIMEOUT_S + SLACK_S)
    assert received == b""


def test_a_body_dripped_byte_by_byte_gets_408_then_close(proxy: RunningProxy) -> None:
    request = _request(proxy)
    head_length = request.index(b"\r\n\r\n") + 4
    with _connect(proxy) as sock:
        sock.sendall(request[: head_length + 1])
        started = time.monotonic()
        try:
            for byte in request[head_length + 1 : head_length + 30]:
                time.sleep(0.2)
                sock.sendall(bytes([byte]))
        except OSError:
            pass
        received, _ = _read_until_closed(sock, TIMEOUT_S + SLACK_S)
        assert time.monotonic() - started < TIMEOUT_S + SLACK_S
    assert received.startswith(b"HTTP/1.1 408 ")
    body = json.loads(received.partition(b"\r\n\r\n")[2])
    assert body["error"]["code"] == "408" and body["error"]["type"] == "timeout"


def test_a_slow_body_on_a_management_route_gets_408(proxy: RunningProxy) -> None:
    request = _request(proxy, json.dumps({"user_id": "slow-body"}).encode(), path="/customer/new")
    with _connect(proxy) as sock:
        sock.sendall(request[:-3])
        received, _ = _read_until_closed(sock, TIMEOUT_S + SLACK_S)
    assert received.startswith(b"HTTP/1.1 408 ")


def test_a_keep_alive_connection_is_not_cut_between_requests_nor_during_a_slow_answer(proxy: RunningProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(_request(proxy))
        assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
        time.sleep(TIMEOUT_S * 1.5)  # idle between requests: uvicorn's keep-alive timeout governs, not ours
        slow = CHAT.replace(b"gpt-3.5-turbo", b"slow")
        sock.sendall(_request(proxy, slow))
        assert _read_response(sock).startswith(b"HTTP/1.1 200 ")  # answered after 2 timeouts
        # A request split across reads, each part well within its deadline, is served.
        request = _request(proxy)
        sock.sendall(request[:30])
        time.sleep(TIMEOUT_S / 4)
        sock.sendall(request[30:-5])
        time.sleep(TIMEOUT_S / 4)
        sock.sendall(request[-5:])
        assert _read_response(sock).startswith(b"HTTP/1.1 200 ")


def test_a_pipelined_request_is_not_timed_while_it_waits_behind_a_slow_one(proxy: RunningProxy) -> None:
    # The second request's body finishes after the body timeout but while the first is still being answered: it is
    # not the client's delay, and a 408 then would be written into the middle of the first answer.
    slow, second = _request(proxy, CHAT.replace(b"gpt-3.5-turbo", b"slow")), _request(proxy)
    with _connect(proxy) as sock:
        sock.sendall(slow + second[:-5])
        time.sleep(TIMEOUT_S * 1.5)
        sock.sendall(second[-5:])
        first, then = _read_responses(sock, 2)
        assert first.startswith(b"HTTP/1.1 200 ") and b'"model":"slow"' in first
        assert then.startswith(b"HTTP/1.1 200 ")


def test_partial_headers_of_a_second_request_on_a_connection_are_closed(proxy: RunningProxy) -> None:
    with _connect(proxy) as sock:
        sock.sendall(_request(proxy))
        assert _read_response(sock).startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"GET /v1/models HTTP/1.1\r\n")
        received, _ = _read_until_closed(sock, TIMEOUT_S + SLACK_S)
    assert received == b""


def test_server_settings_default_to_ten_and_sixty_seconds() -> None:
    from haimaker.config.schema import GeneralSettings

    general = GeneralSettings()
    assert (general.client_header_timeout_s, general.client_body_timeout_s) == (10, 60)


# ---- the CLI's servers: uvicorn (one process, and workers) and granian -----------------------------------------


def _cli_config(tmp_path: Path, **general: Any) -> dict[str, Any]:
    settings = {
        "client_header_timeout_s": TIMEOUT_S,
        "client_body_timeout_s": TIMEOUT_S,
        "database_url": f"sqlite:///{tmp_path / 'cli.db'}",
        **general,
    }
    return base_config(general_settings=settings)


def _assert_slow_headers_are_cut(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /health/liveliness HTTP/1.1\r\nhost: 127.0.0.1\r\n")
        started = time.monotonic()
        _read_until_closed(sock, TIMEOUT_S + SLACK_S)
        assert time.monotonic() - started < TIMEOUT_S + SLACK_S
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:  # a normal client is served
        sock.sendall(b"GET /health/liveliness HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        received, _ = _read_until_closed(sock, 5)
        assert received.startswith(b"HTTP/1.1 200")


@pytest.mark.slow
def test_the_cli_server_cuts_slow_headers(tmp_path: Path) -> None:
    with proxy_process(tmp_path, _cli_config(tmp_path)) as proxy:
        _assert_slow_headers_are_cut(proxy.port)
        request = _request_with_key(MASTER_KEY)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(request[:-3])
            received, _ = _read_until_closed(sock, TIMEOUT_S + SLACK_S)
        assert received.startswith(b"HTTP/1.1 408 ")


@pytest.mark.slow
@pytest.mark.redis
def test_the_cli_workers_cut_slow_headers(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    # Each worker process unpickles the server config: the deadlines must survive the trip.
    config = _cli_config(tmp_path, redis_url=redis_url, redis_key_prefix=redis_prefix)
    with proxy_process(tmp_path, config, args=["--num_workers", "2"]) as proxy:
        _assert_slow_headers_are_cut(proxy.port)
        assert proxy.terminate() == 0


@pytest.mark.slow
def test_granian_cuts_slow_headers(tmp_path: Path) -> None:
    with proxy_process(tmp_path, _cli_config(tmp_path), args=["--server", "granian"]) as proxy:
        _assert_slow_headers_are_cut(proxy.port)


def _request_with_key(key: str) -> bytes:
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer {key}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(CHAT)}\r\n\r\n"
    )
    return head.encode() + CHAT
