"""What is charged: a stream cut by the client is charged for what was produced; an upstream failure
is not charged and leaks no reservation; an upstream dying mid-stream is charged for what it produced."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from haimaker.state.memory import MemoryCounterStore
from tests.support.fakes import DEFAULT_API_KEY, Behavior, FakeOpenAI
from tests.support.proxy import RunningProxy, base_config, running_proxy

REPLY = " ".join(f"word{i}" for i in range(40))


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def proxy(tmp_path: Path, upstream: FakeOpenAI) -> Iterator[RunningProxy]:
    model = {
        "model_name": "up",
        "litellm_params": {
            "model": "openai/gpt-3.5-turbo",
            "api_base": upstream.base_url,
            "api_key": DEFAULT_API_KEY,
            "input_cost_per_token": 0.000001,
            "output_cost_per_token": 0.00001,
        },
    }
    config = base_config(model_list=[model], router_settings={"num_retries": 0})
    with running_proxy(tmp_path, config) as running:
        with running.client() as client:
            created = client.post("/customer/new", json={"user_id": "payer", "max_budget": 10})
            assert created.status_code == 200, created.text
        yield running


def _body(**extra: Any) -> dict[str, Any]:
    return {"model": "up", "messages": [{"role": "user", "content": "count to forty"}], "user": "payer", **extra}


def _logs(proxy: RunningProxy) -> list[dict[str, Any]]:
    proxy.call(proxy.state.recorder.flush())
    with proxy.client() as client:
        rows: list[dict[str, Any]] = client.get("/spend/logs", params={"end_user": "payer"}).json()
    return rows


def _reserved(proxy: RunningProxy) -> int:
    store = proxy.state.engine.store
    assert isinstance(store, MemoryCounterStore)
    counters = store._counters.get("payer")  # the memory store's live counters
    return 0 if counters is None else counters.reserved


def _spend(proxy: RunningProxy) -> float:
    with proxy.client() as client:
        return float(client.get("/customer/info", params={"end_user_id": "payer"}).json()["spend"])


def test_stream_cut_by_the_client_is_charged_for_what_was_produced(proxy: RunningProxy, upstream: FakeOpenAI) -> None:
    upstream.behavior = Behavior(reply=REPLY, chunk_delay_s=0.05)
    with proxy.client() as client:
        with client.stream("POST", "/v1/chat/completions", json=_body(stream=True)) as response:
            assert response.status_code == 200
            events = 0
            for line in response.iter_lines():
                if line.startswith("data: "):
                    events += 1
                if events == 6:
                    break
    upstream.wait_stream_cancelled_sync(timeout_s=3)
    deadline = time.monotonic() + 3
    while not _logs(proxy) and time.monotonic() < deadline:
        time.sleep(0.05)
    [log] = _logs(proxy)
    assert 0 < log["completion_tokens"] < 40
    assert log["spend"] > 0
    assert _spend(proxy) == pytest.approx(log["spend"])
    assert _reserved(proxy) == 0


@pytest.mark.parametrize("status", [500, 503, 429, 400])
def test_upstream_failure_is_not_charged_and_releases_the_reservation(
    proxy: RunningProxy, upstream: FakeOpenAI, status: int
) -> None:
    upstream.behavior = Behavior(status=status)
    with proxy.client() as client:
        response = client.post("/v1/chat/completions", json=_body())
    assert response.status_code == (502 if status >= 500 else status)
    assert "x-litellm-response-cost" not in response.headers
    assert [log for log in _logs(proxy) if log["status"] == "success"] == []
    assert _spend(proxy) == 0
    assert _reserved(proxy) == 0


def test_upstream_dying_mid_stream_is_charged_for_what_it_produced(proxy: RunningProxy, upstream: FakeOpenAI) -> None:
    upstream.behavior = Behavior(reply=REPLY, die_after_chunks=5)
    with proxy.client() as client:
        with client.stream("POST", "/v1/chat/completions", json=_body(stream=True)) as response:
            text = "".join(response.iter_text())
    assert '"error"' in text
    logs = [log for log in _logs(proxy) if log["status"] == "success"]
    assert len(logs) == 1 and 0 < logs[0]["completion_tokens"] < 40
    assert _reserved(proxy) == 0


def test_upstream_dying_before_any_token_is_not_charged(proxy: RunningProxy, upstream: FakeOpenAI) -> None:
    upstream.behavior = Behavior(reply=REPLY, die_after_chunks=0)
    with proxy.client() as client:
        with client.stream("POST", "/v1/chat/completions", json=_body(stream=True)) as response:
            text = "".join(response.iter_text())
    assert '"error"' in text
    assert [log for log in _logs(proxy) if log["status"] == "success"] == []
    assert _spend(proxy) == 0
    assert _reserved(proxy) == 0


def test_stream_usage_from_upstream_is_what_gets_charged(proxy: RunningProxy, upstream: FakeOpenAI) -> None:
    upstream.behavior = Behavior(reply=REPLY, prompt_tokens=100, completion_tokens=40)
    with proxy.client() as client:
        with client.stream("POST", "/v1/chat/completions", json=_body(stream=True)) as response:
            body = "".join(response.iter_text())
    assert '"choices":[]' not in body.replace(" ", "")  # the usage chunk we asked for is stripped
    [log] = _logs(proxy)
    assert (log["prompt_tokens"], log["completion_tokens"]) == (100, 40)
    assert log["spend"] == pytest.approx(100 * 0.000001 + 40 * 0.00001)
