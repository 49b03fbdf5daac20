"""Refused requests in a customer's latest requests (issue 14, `accounting/refusals.py`).

Guards a $0-budget customer looking idle (its refusals missing from `/spend/logs` and the UI page), a refusal that
changes spend or creates a customer, a hammering client turning into one row per refused request, a flood of distinct
customer ids doing the same, refusals still counted at shutdown being lost, a secret reaching a stored message, and a
request with an invalid key being recorded against the customer it names.

The window's bound is tested on the `RefusalLog` with a fake clock (exact), and end to end on a real proxy with the
openai SDK (real time, SQLite).
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from haimaker.accounting.refusals import Refusal, RefusalLog
from haimaker.clock import FakeClock
from haimaker.errors import BudgetExceededError, CustomerBlockedError, ProxyError, RateLimitError
from haimaker.providers.redaction import Redactor
from haimaker.storage.records import SpendLog
from tests.limits.budget_setup import async_client, chat_body, priced_model
from tests.support.proxy import RunningProxy, base_config, running_proxy
from tests.ui.ui_client import UiClient

SECRET = "provider-secret-0123456789abcdef"


class ListSink:
    """The spend recorder's `record`, kept in a list with the clock's monotonic time of each row (what a group write
    does with them is tested end to end below)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.logs: list[SpendLog] = []
        self.written_at: list[float] = []

    def record(self, log: SpendLog) -> None:
        self.logs.append(log)
        self.written_at.append(self.clock.monotonic())


def _refusal(customer: str = "alice", error: ProxyError | None = None, model: str = "gpt-4o") -> Refusal:
    return Refusal(
        customer_id=customer,
        model=model,
        call_type="acompletion",
        api_key="hash-of-key",
        error=error or RateLimitError("Rate limit reached. Limit type: requests"),
    )


def _refusal_log(clock: FakeClock, **options: Any) -> tuple[RefusalLog, ListSink]:
    sink = ListSink(clock)
    return RefusalLog(sink, clock, Redactor([SECRET]), **options), sink


def _count(log: SpendLog) -> int:
    count = log.metadata["refused_requests"]
    assert isinstance(count, int)
    return count


# ---- the window, on a fake clock -----------------------------------------------------------------------------------


def test_a_hammered_refusal_becomes_one_row_per_second_that_counts_every_refusal() -> None:
    clock = FakeClock()
    refusals, sink = _refusal_log(clock)
    # 4,000 refusals a second for 3 seconds, windows closed twice a second as `run()` does.
    for step in range(1, 12_001):
        refusals.note(_refusal())
        clock.advance(0.00025)
        if step % 2_000 == 0:
            refusals.close_windows()
    assert 3 <= len(sink.logs) <= 4  # the first refusal at once, then one row for each second that followed
    gaps = [b - a for a, b in zip(sink.written_at, sink.written_at[1:], strict=False)]
    assert all(gap >= 1.0 - 1e-9 for gap in gaps), gaps
    refusals.close_windows(all_of_them=True)  # as a stop does: what is still counted is written
    assert sum(_count(log) for log in sink.logs) == 12_000
    first = sink.logs[0]
    assert (first.status, first.spend, first.total_tokens, first.end_user) == ("failure", 0, 0, "alice")
    assert (first.model, first.model_group, first.model_id, first.custom_llm_provider) == ("gpt-4o", "gpt-4o", "", "")
    assert first.metadata["error_type"] == "rate_limit_error" and first.metadata["status_code"] == 429
    assert first.metadata["error_information"] == {
        "error_code": "429",
        "error_class": "RateLimitError",
        "error_message": "Rate limit reached. Limit type: requests",
        "llm_provider": "",
    }
    later = sink.logs[1]
    assert later.start_time < later.end_time  # the first and the last refusal it stands for


def test_each_customer_model_key_and_reason_has_its_own_window() -> None:
    clock = FakeClock()
    refusals, sink = _refusal_log(clock)
    budget = BudgetExceededError("Budget has been exceeded! EndUser=alice")
    for refusal in (
        _refusal("alice"),
        _refusal("alice"),
        _refusal("bob"),
        _refusal("alice", budget),
        _refusal("alice", model="other"),
        _refusal("alice", CustomerBlockedError("User blocked from making LLM API Calls. User=alice")),
    ):
        refusals.note(refusal)
    assert [(log.end_user, log.model, log.metadata["error_type"]) for log in sink.logs] == [
        ("alice", "gpt-4o", "rate_limit_error"),
        ("bob", "gpt-4o", "rate_limit_error"),
        ("alice", "gpt-4o", "budget_exceeded"),
        ("alice", "other", "rate_limit_error"),
        ("alice", "gpt-4o", "customer_blocked"),
    ]
    assert refusals.open_windows == 5


def test_a_quiet_window_is_forgotten_and_the_next_refusal_is_written_at_once() -> None:
    clock = FakeClock()
    refusals, sink = _refusal_log(clock)
    refusals.note(_refusal())
    clock.advance(0.5)
    assert refusals.close_windows() == 0 and refusals.open_windows == 1  # not a second yet
    clock.advance(0.6)
    assert refusals.close_windows() == 0 and refusals.open_windows == 0  # nothing more was refused: forgotten
    refusals.note(_refusal())
    assert [_count(log) for log in sink.logs] == [1, 1]


def test_past_the_open_window_bound_refusals_are_dropped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    refusals, sink = _refusal_log(clock, max_open=10)
    for index in range(25):
        refusals.note(_refusal(f"customer-{index}"))
    assert len(sink.logs) == 10 and refusals.dropped == 15
    clock.advance(1.0)
    with caplog.at_level(logging.WARNING, logger="haimaker.refusals"):
        refusals.close_windows()
    assert [r.message for r in caplog.records] == [
        "15 refused requests not written to the spend log: 10 refusal windows are open (the bound)"
    ]
    refusals.note(_refusal("customer-99"))  # the windows closed: room again
    assert sink.logs[-1].end_user == "customer-99"


async def test_stopping_writes_the_refusals_still_counted() -> None:
    clock = FakeClock()
    refusals, sink = _refusal_log(clock, window_s=60.0)
    task = asyncio.create_task(refusals.run())
    for _ in range(5):
        refusals.note(_refusal())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [_count(log) for log in sink.logs] == [1, 4]
    assert refusals.open_windows == 0


def test_a_secret_in_a_refusal_message_is_redacted_before_it_is_stored() -> None:
    refusals, sink = _refusal_log(FakeClock())
    refusals.note(_refusal(error=RateLimitError(f"limited (key {SECRET})")))
    [log] = sink.logs
    assert SECRET not in str(log.metadata)
    assert log.metadata["error_information"]["error_message"] == "limited (key [REDACTED])"


# ---- end to end: a proxy, the openai SDK, the store and the UI --------------------------------------------------


def _config(**litellm_settings: Any) -> dict[str, Any]:
    return base_config(model_list=[priced_model(latency_ms=0)], litellm_settings=litellm_settings)


def _openai(proxy: RunningProxy, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.url + "/v1", api_key=key or proxy.master_key, max_retries=0)


def _ask(client: openai.OpenAI, user: str) -> None:
    client.chat.completions.create(
        model="priced", messages=[{"role": "user", "content": "hi"}], max_tokens=20, user=user
    )


def _logs(admin: httpx.Client, user: str) -> list[dict[str, Any]]:
    response = admin.get("/spend/logs", params={"end_user": user})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def _activity(admin: httpx.Client, user: str) -> dict[str, Any]:
    response = admin.get("/customer/daily/activity", params={"end_user_ids": user})
    assert response.status_code == 200, response.text
    metadata: dict[str, Any] = response.json()["metadata"]
    return metadata


def test_a_zero_budget_customers_refusal_shows_in_its_latest_requests_with_its_reason(tmp_path: Path) -> None:
    with running_proxy(tmp_path, _config()) as proxy, proxy.client() as admin:
        created = admin.post("/customer/new", json={"user_id": "zero", "max_budget": 0})
        assert created.status_code == 200, created.text
        with _openai(proxy) as client, pytest.raises(openai.BadRequestError) as refused:
            _ask(client, "zero")
        assert refused.value.status_code == 400
        message = refused.value.body["message"]  # type: ignore[index]
        assert message.startswith("Budget has been exceeded! EndUser=zero")

        [row] = _logs(admin, "zero")  # at once: the first refusal of a quiet second is written with the response
        assert (row["status"], row["spend"], row["total_tokens"], row["end_user"]) == ("failure", 0.0, 0, "zero")
        assert (row["model"], row["model_group"], row["call_type"]) == ("priced", "priced", "acompletion")
        metadata = row["metadata"]
        assert (metadata["error_type"], metadata["status_code"], metadata["refused_requests"]) == (
            "budget_exceeded",
            400,
            1,
        )
        assert metadata["error_information"]["error_code"] == "400"
        assert metadata["error_information"]["error_class"] == "BudgetExceededError"
        assert metadata["error_information"]["error_message"] == message

        info = admin.get("/customer/info", params={"end_user_id": "zero"})
        assert info.status_code == 200 and info.json()["spend"] == 0, info.text
        activity = _activity(admin, "zero")
        assert (activity["total_spend"], activity["total_api_requests"], activity["total_failed_requests"]) == (
            0,
            1,
            1,
        )

        ui = UiClient(proxy)
        try:
            assert ui.sign_in().status_code == 303
            page = ui.get("/ui/customers/view", id="zero")
        finally:
            ui.close()
        assert page.status_code == 200
        table = page.text.split('id="requests-table"', 1)[1].split("</table>", 1)[0]
        assert "No requests yet" not in page.text
        assert '<span class="status blocked">failure</span>' in table
        assert "budget_exceeded 400" in table and "Budget has been exceeded! EndUser=zero" in table


def test_a_refused_stranger_under_a_zero_default_budget_is_logged_but_not_created(tmp_path: Path) -> None:
    config = _config(max_end_user_budget_id="free", default_end_user_budget={"max_budget": 0})
    with running_proxy(tmp_path, config) as proxy, proxy.client() as admin:
        with _openai(proxy) as client, pytest.raises(openai.BadRequestError):
            _ask(client, "stranger")
        [row] = _logs(admin, "stranger")
        assert row["status"] == "failure" and row["metadata"]["error_type"] == "budget_exceeded"
        # Never admitted, so never created: /customer/info does not know it; its refusals are in the spend logs.
        assert admin.get("/customer/info", params={"end_user_id": "stranger"}).status_code == 404
        listed = admin.get("/customer/list")
        assert listed.status_code == 200 and "stranger" not in {c["user_id"] for c in listed.json()}


def test_a_hammering_client_costs_one_row_per_second_and_every_refusal_is_counted(tmp_path: Path) -> None:
    with running_proxy(tmp_path, _config()) as proxy, proxy.client() as admin:
        created = admin.post("/customer/new", json={"user_id": "hammer", "rpm_limit": 1})
        assert created.status_code == 200, created.text

        async def hammer() -> list[int]:
            async with async_client(proxy.url, proxy.master_key) as client:
                statuses: list[int] = []
                for _ in range(4):  # bursts over about two seconds
                    responses = await asyncio.gather(
                        *(client.post("/v1/chat/completions", json=chat_body("hammer")) for _ in range(100))
                    )
                    statuses.extend(r.status_code for r in responses)
                    await asyncio.sleep(0.4)
                return statuses

        started = time.monotonic()
        statuses = asyncio.run(hammer())
        elapsed_s = time.monotonic() - started
        refused = statuses.count(429)
        assert statuses.count(200) == 1 and refused == 399

        deadline = time.monotonic() + 10
        while True:
            rows = [row for row in _logs(admin, "hammer") if row["status"] == "failure"]
            if sum(row["metadata"]["refused_requests"] for row in rows) == refused or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sum(row["metadata"]["refused_requests"] for row in rows) == refused
        print(f"{refused} refused requests in {elapsed_s:.2f} s -> {len(rows)} spend log rows")
        # At most one row a second (the first refusal at once, then one per second the hammering lasted).
        assert 2 <= len(rows) <= elapsed_s + 2, (len(rows), elapsed_s)
        assert {row["metadata"]["error_type"] for row in rows} == {"rate_limit_error"}

        info = admin.get("/customer/info", params={"end_user_id": "hammer"}).json()
        activity = _activity(admin, "hammer")
        assert activity["total_failed_requests"] == refused and activity["total_successful_requests"] == 1
        assert activity["total_spend"] == pytest.approx(info["spend"]) and info["spend"] > 0


def test_a_request_with_an_invalid_key_is_not_recorded_for_the_customer_it_names(tmp_path: Path) -> None:
    with running_proxy(tmp_path, _config()) as proxy, proxy.client() as admin:
        assert admin.post("/customer/new", json={"user_id": "victim", "max_budget": 0}).status_code == 200
        with _openai(proxy, key="sk-not-a-key") as client, pytest.raises(openai.AuthenticationError):
            _ask(client, "victim")
        assert _logs(admin, "victim") == []


def test_with_end_user_cost_tracking_off_refusals_are_not_recorded(tmp_path: Path) -> None:
    with running_proxy(tmp_path, _config(disable_end_user_cost_tracking=True)) as proxy, proxy.client() as admin:
        assert admin.post("/customer/new", json={"user_id": "untracked", "max_budget": 0}).status_code == 200
        with _openai(proxy) as client, pytest.raises(openai.BadRequestError):
            _ask(client, "untracked")
        assert _logs(admin, "untracked") == []
        assert admin.get("/spend/logs").json() == []
