"""The ledger seen from outside: a charge the store cannot hold, and a store lost while serving (issue 10, findings
1 and 4).

Guards the two silent failures found in review: one bad charge stopping all spend writing while readiness said
"healthy", and a SQLite file deleted under a running proxy (requests kept succeeding into the deleted file, and the
next start created a new, empty store). Each test runs a real proxy over HTTP; the store is damaged for real.
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url, text

from haimaker.services.container import SETTLE_TIMEOUT_S
from haimaker.storage.engine import create_engine, upgrade
from tests.support.databases import drop_database, make_database_url
from tests.support.factories import make_log
from tests.support.process import proxy_process
from tests.support.proxy import MASTER_KEY, RunningProxy, base_config, running_proxy
from tests.support.relay import tcp_relay

ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}
CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}], "user": "alice"}


def _readiness(proxy: RunningProxy) -> httpx.Response:
    return httpx.get(proxy.url + "/health/readiness", timeout=10)


def _wait_for(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def _chat(proxy: RunningProxy) -> httpx.Response:
    return httpx.post(proxy.url + "/v1/chat/completions", json=CHAT, headers=ADMIN, timeout=10)


def _config(*, fail_closed: bool = False, **general: Any) -> dict[str, Any]:
    return base_config(general_settings={"fail_closed_budget_enforcement": fail_closed, **general})


def _remove_sqlite(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


# ---- a charge the store cannot hold -------------------------------------------------------------------------


def test_a_bad_charge_is_a_dead_letter_seen_in_readiness_metrics_and_the_api(tmp_path: Path) -> None:
    with running_proxy(tmp_path, _config()) as proxy:
        assert _readiness(proxy).json()["status"] == "healthy"
        # A charge the store refuses (a naive start time); values the journal cannot hold either (2**64 tokens)
        # are tested at the recorder level, tests/accounting/test_dead_letters.py.
        poison = make_log(end_user="bob", start_time=datetime(2026, 1, 1, 12, 0))
        assert proxy.loop is not None
        proxy.loop.call_soon_threadsafe(proxy.state.recorder.record, poison)
        assert _chat(proxy).status_code == 200  # other customers' charges keep flowing
        proxy.call(proxy.state.recorder.flush())

        ready = _readiness(proxy)
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "degraded" and body["db"] == "connected"
        assert body["spend_dead_letters"] == 1 and body["spend_writes_pending"] == 0
        assert "/spend/dead_letters" in body["reasons"][0]

        metrics = httpx.get(proxy.url + "/metrics", timeout=10).text
        assert 'haimaker_spend_dead_letters{where="table"} 1.0' in metrics
        assert 'haimaker_store_state{state="ok"} 1.0' in metrics

        listed = httpx.get(proxy.url + "/spend/dead_letters", headers=ADMIN, timeout=10)
        assert httpx.get(proxy.url + "/spend/dead_letters", timeout=10).status_code == 401
        [letter] = listed.json()["data"]
        assert letter["kind"] == "charge" and "naive datetime" in letter["error"]
        assert letter["item"]["request_id"] == poison.request_id

        # Dealt with: deleted, and readiness is healthy again.
        gone = httpx.delete(f"{proxy.url}/spend/dead_letters/{letter['id']}", headers=ADMIN, timeout=10)
        assert gone.status_code == 200
        assert _readiness(proxy).json()["status"] == "healthy"
        assert httpx.delete(f"{proxy.url}/spend/dead_letters/x%00y", headers=ADMIN, timeout=10).status_code == 404


# ---- a store lost while serving ----------------------------------------------------------------------------


def test_deleting_the_sqlite_file_fails_readiness_stops_fail_closed_calls_and_refuses_the_restart(
    tmp_path: Path,
) -> None:
    config = _config(fail_closed=True)
    with running_proxy(tmp_path, config) as proxy:
        assert _chat(proxy).status_code == 200
        _remove_sqlite(tmp_path / "haimaker.db")
        assert _wait_for(lambda: _readiness(proxy).status_code == 503)
        body = _readiness(proxy).json()
        assert body["status"] == "unhealthy" and body["db"] == "lost"
        refused = _chat(proxy)
        assert refused.status_code == 503
        assert refused.json()["error"]["type"] == "store_unavailable"
        assert 'haimaker_store_state{state="lost"} 1.0' in httpx.get(proxy.url + "/metrics", timeout=10).text
        _remove_sqlite(tmp_path / "haimaker.db")  # whatever the pool re-created meanwhile
    _assert_restart_refused(tmp_path, config)


def test_replacing_the_sqlite_file_fails_readiness_and_refuses_the_restart(tmp_path: Path) -> None:
    config = _config()
    other = tmp_path / "other" / "haimaker.db"
    other.parent.mkdir()
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{other}"))  # another store: its own id
    with running_proxy(tmp_path, config) as proxy:
        assert _chat(proxy).status_code == 200
        _remove_sqlite(tmp_path / "haimaker.db")
        shutil.copy(other, tmp_path / "haimaker.db")
        assert _wait_for(lambda: _readiness(proxy).status_code == 503)
        assert "replaced" in _readiness(proxy).json()["reasons"][0]
        assert _chat(proxy).status_code == 200  # fail-open: serving goes on, the charges wait
    _assert_restart_refused(tmp_path, config)


def test_a_read_only_sqlite_file_fails_readiness_until_it_is_writable_again(tmp_path: Path) -> None:
    db = tmp_path / "haimaker.db"
    with running_proxy(tmp_path, _config(fail_closed=True)) as proxy:
        assert _chat(proxy).status_code == 200
        db.chmod(0o444)
        try:
            assert _wait_for(lambda: _readiness(proxy).status_code == 503)
            assert "read-only" in _readiness(proxy).json()["reasons"][0]
            assert _chat(proxy).status_code == 503
        finally:
            db.chmod(0o644)
        assert _wait_for(lambda: _readiness(proxy).status_code == 200)
        assert _chat(proxy).status_code == 200
        proxy.call(proxy.state.recorder.flush())  # the charges held meanwhile are written


def test_a_restart_against_the_same_store_is_accepted(tmp_path: Path) -> None:
    with running_proxy(tmp_path, _config()) as proxy:
        assert _chat(proxy).status_code == 200
    with running_proxy(tmp_path, _config()) as proxy:
        assert _readiness(proxy).json()["status"] == "healthy"


def _assert_restart_refused(tmp_path: Path, config: dict[str, Any]) -> None:
    with pytest.raises(RuntimeError, match="exited"), proxy_process(tmp_path, config, name="restart"):
        pass
    log = (tmp_path / "restart.log").read_text()
    assert "refusing to start" in log and "store-id" in log and "start again" in log
    assert "Traceback" not in log


@pytest.mark.postgres
def test_an_emptied_postgres_fails_readiness(tmp_path: Path) -> None:
    url = asyncio.run(make_database_url("postgres", tmp_path))
    try:
        with running_proxy(tmp_path, _config(database_url=url, fail_closed=True)) as proxy:
            assert _chat(proxy).status_code == 200
            assert _readiness(proxy).status_code == 200
            asyncio.run(_empty_postgres(url))
            assert _wait_for(lambda: _readiness(proxy).status_code == 503)
            assert _readiness(proxy).json()["db"] == "lost"
            assert _chat(proxy).status_code == 503
        _assert_restart_refused(tmp_path, _config(database_url=url))
    finally:
        asyncio.run(drop_database(url))


# ---- admin reads while the store is lost or unreachable ----------------------------------------------------------


def _timed_customer_info(proxy: RunningProxy) -> tuple[httpx.Response, float]:
    """An admin read that first waits for the pending charges (`Services.settle_pending`), and how long it took."""
    started = time.monotonic()
    response = httpx.get(f"{proxy.url}/customer/info", params={"end_user_id": "alice"}, headers=ADMIN, timeout=30)
    return response, time.monotonic() - started


def _assert_store_refusal(response: httpx.Response, elapsed_s: float) -> None:
    # At once (the settle wait is several seconds), in the OpenAI envelope, with a hint when to come back.
    assert response.status_code == 503, response.text
    assert elapsed_s < 1.5
    error = response.json()["error"]
    assert error["type"] == "store_unavailable" and error["code"] == "503"
    assert "/health/readiness" in error["message"]
    assert int(response.headers["retry-after"]) >= 1


def test_admin_reads_answer_503_at_once_while_the_sqlite_file_is_lost(tmp_path: Path) -> None:
    with running_proxy(tmp_path, _config()) as proxy:
        assert _chat(proxy).status_code == 200
        proxy.call(proxy.state.recorder.flush())
        _remove_sqlite(tmp_path / "haimaker.db")
        assert _wait_for(lambda: _readiness(proxy).json()["db"] == "lost")
        assert _chat(proxy).status_code == 200  # fail-open: served, its charge waits for the store
        assert proxy.state.recorder.pending == 1
        _assert_store_refusal(*_timed_customer_info(proxy))
        _remove_sqlite(tmp_path / "haimaker.db")  # whatever the pool re-created meanwhile


def test_admin_reads_wait_a_short_bound_for_writes_a_reachable_store_does_not_take(tmp_path: Path) -> None:
    with running_proxy(tmp_path, _config()) as proxy:
        assert _chat(proxy).status_code == 200
        proxy.call(proxy.state.recorder.flush())
        # Another writer holds the SQLite write lock: the store answers reads (the monitor says ok), writes wait.
        blocker = sqlite3.connect(tmp_path / "haimaker.db", isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            assert _chat(proxy).status_code == 200
            assert _readiness(proxy).json()["db"] == "connected"
            response, elapsed_s = _timed_customer_info(proxy)
            assert response.status_code == 503, response.text
            assert SETTLE_TIMEOUT_S <= elapsed_s < 6  # the short bound (3 s), not the 10 s wait found in review
            assert response.json()["error"]["type"] == "service_unavailable"
            assert int(response.headers["retry-after"]) >= 1
        finally:
            blocker.close()
        proxy.call(asyncio.wait_for(proxy.state.recorder.flush(), 30))
        assert _timed_customer_info(proxy)[0].status_code == 200


@pytest.mark.postgres
def test_an_unreachable_postgres_answers_admin_reads_503_at_once_and_shows_the_journal_in_metrics(
    tmp_path: Path,
) -> None:
    url = asyncio.run(make_database_url("postgres", tmp_path))
    try:
        target = make_url(url)
        with tcp_relay(target.host or "127.0.0.1", target.port or 5432) as relay:
            via_relay = target.set(host="127.0.0.1", port=relay.port).render_as_string(hide_password=False)
            # The smallest queue bound, so that the charges below go past it and wait in the journal only.
            with running_proxy(tmp_path, _config(database_url=via_relay, spend_queue_max=100)) as proxy:
                assert _chat(proxy).status_code == 200
                proxy.call(proxy.state.recorder.flush())
                metrics = httpx.get(proxy.url + "/metrics", timeout=10).text
                assert "haimaker_spend_journal_only 0.0" in metrics

                relay.close()  # PostgreSQL is gone for this proxy
                assert _wait_for(lambda: _readiness(proxy).json()["db"] == "disconnected", timeout_s=10)
                assert proxy.loop is not None
                for i in range(150):
                    proxy.loop.call_soon_threadsafe(proxy.state.recorder.record, make_log(request_id=f"held-{i}"))
                assert _wait_for(lambda: proxy.state.recorder.pending == 150)
                _assert_store_refusal(*_timed_customer_info(proxy))

                metrics = httpx.get(proxy.url + "/metrics", timeout=10).text
                assert "haimaker_spend_writes_pending 150.0" in metrics
                assert "haimaker_spend_journal_only 50.0" in metrics  # 100 in memory, the rest on disk only
                journal_bytes = _gauge(metrics, "haimaker_spend_journal_bytes")
                on_disk = sum(path.stat().st_size for path in (tmp_path / "haimaker-journal").glob("*.seg"))
                assert journal_bytes == on_disk > 150 * 100

                relay.open()  # PostgreSQL is back: the charges drain, reads answer again
                proxy.call(asyncio.wait_for(proxy.state.recorder.flush(), 30))
                assert _wait_for(lambda: _readiness(proxy).status_code == 200)
                response, _ = _timed_customer_info(proxy)
                assert response.status_code == 200
                metrics = httpx.get(proxy.url + "/metrics", timeout=10).text
                assert "haimaker_spend_journal_only 0.0" in metrics
    finally:
        asyncio.run(drop_database(url))


def _gauge(metrics: str, name: str) -> float:
    [line] = [line for line in metrics.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


async def _empty_postgres(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text("DROP SCHEMA public CASCADE"))
            await connection.execute(text("CREATE SCHEMA public"))
    finally:
        await engine.dispose()
