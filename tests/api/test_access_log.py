"""The access log of a `haimaker` process, read from its stderr: one line per request with the customer and the key
as logs may name them, on with `--detailed_debug` or `general_settings.access_log`, off by default, and never
the database driver's, SQLAlchemy's, Redis' or httpx's debug chatter alongside.

Guards: a key or a query string in a log line, a forged line from a newline in a path, an access log that costs
the hot path when off, and `--detailed_debug` flooding the log with a driver's every cursor call (issue 14).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from haimaker.api.access_log import access_line
from haimaker.identity import Attribution, Caller, Role
from haimaker.storage.records import VirtualKey
from tests.support.databases import temporary_database
from tests.support.process import ProxyProcess, proxy_process
from tests.support.proxy import MASTER_KEY, base_config

# `configure_logging`'s format: `<date> <time> LEVEL logger: message`.
_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \S+ (?P<level>[A-Z]+) (?P<logger>[\w.]+): (?P<message>.*)$")
_CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}


def _records(proxy: ProxyProcess) -> list[tuple[str, str]]:
    """(logger, message) of every log record the process wrote (granian/uvicorn lines have another shape)."""
    return [(m["logger"], m["message"]) for line in proxy.log().splitlines() if (m := _RECORD.match(line))]


def _access_lines(proxy: ProxyProcess) -> list[str]:
    return [message for name, message in _records(proxy) if name == "haimaker.access"]


def _chat_and_key_calls(proxy: ProxyProcess) -> str:
    """A chat call with a customer under a virtual key with an alias, and one with a query string; the key."""
    with httpx.Client(base_url=proxy.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30) as admin:
        made = admin.post("/key/generate", json={"key_alias": "billing-bot"})
        assert made.status_code == 200, made.text
    key: str = made.json()["key"]
    client = openai.OpenAI(base_url=f"{proxy.url}/v1", api_key=key, max_retries=0)
    try:
        answer = client.chat.completions.create(
            model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}], user="acme-42"
        )
        assert answer.choices[0].message.content
        # The query string may carry a key (`?api-key=` as Azure clients send it): never logged.
        refused = httpx.post(f"{proxy.url}/v1/chat/completions?api-key=sk-in-the-query", json=_CHAT, timeout=30)
        assert refused.status_code == 401
    finally:
        client.close()
    return key


def _assert_only_our_loggers(proxy: ProxyProcess) -> None:
    names = {name for name, _ in _records(proxy)}
    assert names, proxy.log()
    assert all(name == "haimaker" or name.startswith("haimaker.") for name in names), names
    for chatter in ("aiosqlite", "asyncpg", "sqlalchemy", "httpx", "httpcore", "redis", "executing functools"):
        assert chatter not in proxy.log(), proxy.log()


def _wait_for_lines(proxy: ProxyProcess, count: int) -> list[str]:
    """The access lines once `count` are written (a line is written as its answer ends, after the client read it)."""
    import time

    deadline = time.monotonic() + 10
    while len(lines := _access_lines(proxy)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return lines


@pytest.mark.slow
def test_detailed_debug_logs_each_request_with_customer_and_key_alias_and_no_driver_chatter(tmp_path: Path) -> None:
    with proxy_process(tmp_path, base_config(), args=["--detailed_debug"]) as proxy:
        key = _chat_and_key_calls(proxy)
        lines = _wait_for_lines(proxy, 4)

    chat = [line for line in lines if line.startswith("POST /v1/chat/completions 200 ")]
    assert len(chat) == 1, lines
    assert re.fullmatch(r"POST /v1/chat/completions 200 \d+\.\dms customer=acme-42 key=billing-bot", chat[0])
    assert any(line.startswith("POST /key/generate 200 ") for line in lines), lines
    assert any(re.fullmatch(r"POST /v1/chat/completions 401 \d+\.\dms", line) for line in lines), lines
    assert any(line.startswith("GET /health/readiness 200 ") for line in lines), lines
    log = proxy.log()
    assert key not in log and key[-12:] not in log and MASTER_KEY not in log
    assert "sk-in-the-query" not in log and "?" not in "\n".join(lines)
    _assert_only_our_loggers(proxy)
    # uvicorn's own access log stays off: ours is the only one.
    assert '"POST /v1/chat/completions HTTP/1.1" 200' not in log


@pytest.mark.slow
def test_the_access_log_is_off_by_default_and_on_with_the_config_key(tmp_path: Path) -> None:
    with proxy_process(tmp_path / "off", _config(tmp_path / "off")) as proxy:
        _chat_and_key_calls(proxy)
        assert _access_lines(proxy) == []
    on = _config(tmp_path / "on", access_log=True)
    with proxy_process(tmp_path / "on", on, args=["--server", "granian"]) as proxy:
        _chat_and_key_calls(proxy)
        lines = _wait_for_lines(proxy, 4)
        log = proxy.log()
    assert any(re.fullmatch(r"POST /v1/chat/completions 200 \S+ customer=acme-42 key=billing-bot", x) for x in lines)
    assert "granian.access" not in log and '"POST /v1/chat/completions HTTP/1.1"' not in log, log


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
async def test_detailed_debug_keeps_asyncpg_and_redis_quiet(tmp_path: Path, redis_url: str, redis_prefix: str) -> None:
    async with temporary_database("postgres", tmp_path) as url:
        general = {"database_url": url, "redis_url": redis_url, "redis_key_prefix": redis_prefix}
        config = base_config(general_settings=general)
        with proxy_process(tmp_path, config, args=["--detailed_debug", "--num_workers", "2"]) as proxy:
            _chat_and_key_calls(proxy)
            lines = _wait_for_lines(proxy, 4)
            # A worker process configures its own logging: its requests are logged, its drivers stay quiet.
            assert any("customer=acme-42 key=billing-bot" in line for line in lines), proxy.log()
            _assert_only_our_loggers(proxy)
            assert proxy.terminate() == 0


def _config(tmp_path: Path, **general: Any) -> dict[str, Any]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return base_config(general_settings=general)


def _key(**fields: Any) -> VirtualKey:
    return VirtualKey(token="f" * 64, **fields)


def test_a_line_names_the_key_by_alias_else_abbreviation_else_master_and_never_a_query() -> None:
    scope = {"method": "POST", "path": "/v1/embeddings", "query_string": b"api-key=sk-secret"}
    aliased = Attribution(Caller(Role.LLM, "f" * 64, _key(key_alias="ops", key_name="sk-...abcd")), "c-1")
    assert access_line(scope, 200, 0.0123, aliased) == "POST /v1/embeddings 200 12.3ms customer=c-1 key=ops"
    plain = Attribution(Caller(Role.LLM, "f" * 64, _key(key_name="sk-...abcd")))
    assert access_line(scope, 429, 0.001, plain) == "POST /v1/embeddings 429 1.0ms key=sk-...abcd"
    master = Attribution(Caller(Role.MASTER, "e" * 64), "c-2")
    assert access_line(scope, 200, 0.001, master).endswith("customer=c-2 key=master")
    assert access_line(scope, 0, 0.5, Attribution()) == "POST /v1/embeddings 0 500.0ms"  # the client left first


def test_a_newline_in_a_path_or_customer_cannot_forge_a_log_line() -> None:
    scope = {"method": "GET", "path": "/x\n2026-01-01 00:00:00 INFO haimaker: forged"}
    line = access_line(scope, 404, 0.001, Attribution(customer_id="a b\nc"))
    assert "\n" not in line
    assert "'/x\\n2026-01-01 00:00:00 INFO haimaker: forged'" in line and "customer='a b\\nc'" in line
