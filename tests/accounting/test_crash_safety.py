"""kill -9 under load loses no acknowledged charge: the spend journal is replayed at the next start.

A real `haimaker` subprocess serves JSON and streaming calls for several customers; the client keeps the call id of
every acknowledged request (a 200 JSON answer, or a stream whose `data: [DONE]` it read). The process is killed with
SIGKILL mid-load, started again on the same store and journal, and every acknowledged call must then be in
spend_logs, with each customer's stored spend equal to the sum of its stored charges.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from haimaker.storage.engine import create_engine
from tests.support.databases import DatabaseKind, make_database_url
from tests.support.databases import drop_database as drop_test_database
from tests.support.process import ProxyProcess, free_port, proxy_process
from tests.support.proxy import MASTER_KEY, base_config, running_proxy
from tests.support.relay import tcp_relay

pytestmark = pytest.mark.slow

MODEL = {
    "model_name": "priced",
    "litellm_params": {
        "model": "mock/gpt-3.5-turbo",
        "mock_latency_ms": 2,
        "input_cost_per_token": 0.000001,
        "output_cost_per_token": 0.00001,
    },
}
CUSTOMERS = 6


@pytest.fixture(params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)])
async def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    kind: DatabaseKind = request.param
    url = await make_database_url(kind, tmp_path)
    try:
        yield url
    finally:
        await drop_test_database(url)


class Load:
    """Concurrent JSON and streaming calls; `acknowledged` holds the call ids the client was told succeeded."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.acknowledged: set[str] = set()
        self.failures = 0
        self._stop = False

    async def run(self, workers: int, duration_s: float) -> None:
        limits = httpx.Limits(max_connections=workers)
        headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10, limits=limits) as client:
            deadline = time.monotonic() + duration_s
            await asyncio.gather(*(self._worker(client, n, deadline) for n in range(workers)))

    def stop(self) -> None:
        self._stop = True

    async def _worker(self, client: httpx.AsyncClient, n: int, deadline: float) -> None:
        body: dict[str, Any] = {"model": "priced", "messages": [{"role": "user", "content": "hello there"}]}
        i = 0
        while not self._stop and time.monotonic() < deadline:
            i += 1
            call = {**body, "user": f"cust-{(n + i) % CUSTOMERS}", "stream": (n + i) % 2 == 0}
            try:
                if call["stream"]:
                    async with client.stream("POST", "/v1/chat/completions", json=call) as response:
                        async for line in response.aiter_lines():
                            if line == "data: [DONE]" and response.status_code == 200:
                                self.acknowledged.add(response.headers["x-litellm-call-id"])
                else:
                    response = await client.post("/v1/chat/completions", json=call)
                    if response.status_code == 200:
                        self.acknowledged.add(response.headers["x-litellm-call-id"])
                    else:
                        self.failures += 1
            except httpx.HTTPError:
                if self._stop:
                    return
                self.failures += 1
                await asyncio.sleep(0.01)


async def _load_then_kill(proxy: ProxyProcess, *, workers: int, before_kill_s: float) -> Load:
    load = Load(proxy.url)
    task = asyncio.create_task(load.run(workers, before_kill_s + 5))
    await asyncio.sleep(before_kill_s)
    proxy.kill()  # SIGKILL mid-load
    load.stop()
    await task
    return load


async def _store_state(url: str) -> tuple[set[str], dict[str, int], dict[str, int]]:
    """(request ids in spend_logs, stored spend per customer, sum of stored charges per customer)."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            ids = set((await conn.execute(text("SELECT request_id FROM spend_logs"))).scalars())
            spend = {row[0]: int(row[1]) for row in await conn.execute(text("SELECT user_id, spend FROM customers"))}
            sums_sql = "SELECT end_user, SUM(spend) FROM spend_logs WHERE end_user != '' GROUP BY end_user"
            sums = {row[0]: int(row[1]) for row in await conn.execute(text(sums_sql))}
    finally:
        await engine.dispose()
    return ids, spend, sums


@contextlib.contextmanager
def _serving(tmp_path: Path, config: dict[str, Any], name: str = "proxy") -> Iterator[ProxyProcess]:
    """`proxy_process`, with the end of the proxy's log in the failure when it does not start."""
    try:
        with proxy_process(tmp_path, config, name=name) as proxy:
            yield proxy
    except RuntimeError as exc:
        raise AssertionError((tmp_path / f"{name}.log").read_text()[-3000:]) from exc


def _restart_and_stop(tmp_path: Path, config: dict[str, Any]) -> str:
    """Start again on the same store and journal (the replay runs before readiness), then stop cleanly."""
    with _serving(tmp_path, config, name="restarted") as proxy:
        assert proxy.terminate() == 0
        return proxy.log()


def _assert_nothing_lost(load: Load, ids: set[str], spend: dict[str, int], sums: dict[str, int]) -> None:
    lost = load.acknowledged - ids
    print(f"kill -9: {len(lost)} lost of {len(load.acknowledged)} acknowledged ({load.failures} failures)")
    assert len(load.acknowledged) > 100, load.failures
    assert lost == set()
    assert spend == sums


async def test_kill_9_under_load_then_restart_loses_no_acknowledged_charge(tmp_path: Path, store_url: str) -> None:
    config = base_config(model_list=[MODEL], general_settings={"database_url": store_url})
    with _serving(tmp_path, config) as proxy:
        load = await _load_then_kill(proxy, workers=24, before_kill_s=1.5)
    log = _restart_and_stop(tmp_path, config)
    ids, spend, sums = await _store_state(store_url)
    _assert_nothing_lost(load, ids, spend, sums)
    assert "replayed" in log


async def test_kill_9_with_group_fsync_loses_no_acknowledged_charge(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'group.db'}"
    config = base_config(model_list=[MODEL], general_settings={"database_url": url, "spend_journal_fsync": "group"})
    with _serving(tmp_path, config) as proxy:
        load = await _load_then_kill(proxy, workers=24, before_kill_s=1.5)
    _restart_and_stop(tmp_path, config)
    _assert_nothing_lost(load, *await _store_state(url))


@pytest.mark.postgres
async def test_postgres_unreachable_then_kill_9_then_restart_loses_no_acknowledged_charge(tmp_path: Path) -> None:
    url = await make_database_url("postgres", tmp_path)
    try:
        target = make_url(url)
        with tcp_relay(target.host or "127.0.0.1", target.port or 5432) as relay:
            via_relay = target.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
            # The smallest queue bound, so that this load goes past it: charges then wait in the journal only.
            general = {"database_url": via_relay, "spend_queue_max": 100}
            config = base_config(model_list=[MODEL], general_settings=general)
            with _serving(tmp_path, config) as proxy:
                warm = Load(proxy.url)
                await warm.run(4, 0.3)
                relay.close()  # PostgreSQL is gone for this proxy
                load = await _load_then_kill(proxy, workers=24, before_kill_s=2.5)
                log = proxy.log()
            relay.open()  # PostgreSQL is back
            _restart_and_stop(tmp_path, config)
        load.acknowledged |= warm.acknowledged
        ids, spend, sums = await _store_state(url)
        _assert_nothing_lost(load, ids, spend, sums)
        assert "further charges wait in the journal" in log  # memory stayed bounded
    finally:
        await drop_test_database(url)


class _UpstreamHoldingItsEnd:
    """An OpenAI-style upstream whose stream sends `data: [DONE]` and then keeps its body open for `hold_s`: the
    proxy relays [DONE] to the client before it can know that the upstream has ended."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="holding-upstream", daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self._loop
        ).result(timeout=10)

    def close(self) -> None:
        async def shut() -> None:
            self._server.close()
            await _cancel_other_tasks()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
            await reader.readexactly(length)
            chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
            events = [
                {**chunk, "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]},
                {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                {**chunk, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}},
            ]
            body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events) + b"data: [DONE]\n\n"
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                + b"%x\r\n%b\r\n" % (len(body), body)
            )
            await writer.drain()
            await asyncio.sleep(self.hold_s)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            await reader.read()  # until the proxy closes or pools the connection and we are shut down
        except (OSError, asyncio.IncompleteReadError, StopIteration, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()


async def _cancel_other_tasks() -> None:
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_stream_is_journaled_before_the_client_sees_its_done(tmp_path: Path) -> None:
    upstream = _UpstreamHoldingItsEnd(hold_s=3.0)
    try:
        model = {
            "model_name": "held",
            "litellm_params": {"model": "openai/m", "api_base": f"http://127.0.0.1:{upstream.port}/v1", "api_key": "k"},
        }
        with running_proxy(tmp_path, base_config(model_list=[model])) as proxy:
            body = {"model": "held", "messages": [{"role": "user", "content": "hi"}], "stream": True, "user": "s1"}
            async with (
                httpx.AsyncClient(base_url=proxy.url, headers=proxy.headers(), timeout=10) as client,
                client.stream("POST", "/v1/chat/completions", json=body) as response,
            ):
                call_id = response.headers["x-litellm-call-id"]
                async for line in response.aiter_lines():
                    if line == "data: [DONE]":
                        break
                # The upstream has not ended yet; the charge must already be on disk.
                journaled = b"".join(path.read_bytes() for path in (tmp_path / "haimaker-journal").glob("*.seg"))
                assert call_id.encode() in journaled
    finally:
        upstream.close()


def test_an_unusable_default_journal_place_serves_without_a_journal_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "haimaker-journal").write_text("not a directory")  # as a read-only config mount would refuse it
    with running_proxy(tmp_path, base_config()) as proxy, proxy.client() as client:
        body = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], "user": "u1"}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert "spend journal off" in caplog.text


def test_an_unusable_configured_journal_dir_refuses_to_start(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a directory")
    config = base_config(general_settings={"spend_journal_dir": str(tmp_path / "taken")})
    with pytest.raises(RuntimeError, match="proxy failed to start"), running_proxy(tmp_path, config):
        pass
