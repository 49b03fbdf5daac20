"""End to end: a started proxy, the openai SDK, and fake Stripe, Lago, OpenMeter and webhook receivers that fail on
demand; every charge must arrive exactly once at each, and add up to the ledger to the nano-dollar."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.billing.export_setup import (
    CUSTOMERS,
    LAGO_KEY,
    STRIPE_CUSTOMER_IDS,
    STRIPE_KEY,
    charge,
    export_config,
    export_status,
    lago_sink,
    ledger_totals,
    openmeter_sink,
    reconcile,
    stripe_sink,
    webhook_sink,
)
from tests.billing.fakes import FakeLago, FakeOpenMeter, FakeStripe, FakeWebhook, wait_for
from tests.support.databases import drop_database, make_database_url
from tests.support.proxy import running_proxy

N = 40


def test_every_charge_arrives_once_at_every_sink_after_500s_and_timeouts(tmp_path: Path) -> None:
    with (
        FakeStripe(api_key=STRIPE_KEY, event_name="llm_spend") as stripe,
        FakeLago(api_key=LAGO_KEY, code="llm_usage") as lago,
        FakeOpenMeter(api_key="om_0123456789abcdef0123456789abcdef", event_type="llm_usage") as openmeter,
        FakeWebhook(secret="whsec_0123456789abcdefghijklmnopqrstuv") as hook,
    ):
        stripe.fail("accept_then_hang", times=3)  # counted, answer lost: resent, answered from the idempotency cache
        lago.fail("500", times=4)
        openmeter.fail("hang", times=2)  # timeouts
        hook.fail("accept_then_hang", times=1)  # the receiver dedupes on the event ids
        config = export_config(stripe_sink(stripe), lago_sink(lago), openmeter_sink(openmeter), webhook_sink(hook))
        with running_proxy(tmp_path, config) as proxy:
            charge(proxy, N)
            fakes = (stripe, lago, openmeter, hook)
            wait_for(lambda: all(len(fake.events) == N for fake in fakes))
            wait_for(lambda: all(s["pending"] == 0 for s in export_status(proxy).values()))
            ledger = ledger_totals(proxy)
            assert set(ledger) == set(CUSTOMERS) and all(spend > 0 for spend in ledger.values())
            reconcile(stripe, ledger, STRIPE_CUSTOMER_IDS)
            for fake in (lago, openmeter, hook):
                reconcile(fake, ledger)
            # The lost answers were resent: the sinks saw duplicates and counted each event once.
            assert stripe.replays >= 3 and hook.deliveries > N
            status = export_status(proxy)
            assert {name: s["exported"] for name, s in status.items()} == dict.fromkeys(status, N)
            assert all(s["failed"] == 0 and s["lag_seconds"] == 0 for s in status.values())
            assert "HTTP 500" in (status["lago"]["last_error"] or "")
            assert "no answer within" in (status["stripe"]["last_error"] or "")
            assert "no answer within" in (status["openmeter"]["last_error"] or "")


def test_restart_mid_export_delivers_everything_once(tmp_path: Path) -> None:
    with (
        FakeStripe(api_key=STRIPE_KEY, event_name="llm_spend") as stripe,
        FakeLago(api_key=LAGO_KEY, code="llm_usage") as lago,
    ):
        config = export_config(stripe_sink(stripe), lago_sink(lago))
        with running_proxy(tmp_path, config) as proxy:
            stripe.fail("500")  # down for the whole first run
            lago.fail("accept_then_hang")  # takes batches, never answers: the proxy stops with them unacknowledged
            charge(proxy, N)
            wait_for(lambda: len(lago.events) >= 7 and stripe.requests > 0)
            ledger = ledger_totals(proxy)  # every charge written (and so in the outbox)
            status = export_status(proxy)
            assert status["stripe"]["pending"] == N and status["stripe"]["exported"] == 0
        # Stopped mid-export; the sinks come back; a new process on the same store finishes the job.
        stripe.recover()
        lago.recover()
        with running_proxy(tmp_path, config) as proxy:
            wait_for(lambda: len(stripe.events) == N and len(lago.events) == N)
            wait_for(lambda: all(s["pending"] == 0 for s in export_status(proxy).values()))
            assert ledger_totals(proxy) == ledger
            reconcile(stripe, ledger, STRIPE_CUSTOMER_IDS)
            reconcile(lago, ledger)
            assert lago.deliveries == N  # the batches taken before the stop were refused as duplicates, not recounted


def test_an_event_the_sink_refuses_is_dead_lettered_without_blocking_the_others(tmp_path: Path) -> None:
    with FakeOpenMeter(api_key=None, event_type="llm_usage") as openmeter:
        openmeter.refuse_subjects = {"globex"}
        config = export_config(openmeter_sink(openmeter, api_key=None))
        with running_proxy(tmp_path, config) as proxy:
            charge(proxy, 12)
            wait_for(
                lambda: (
                    export_status(proxy)["openmeter"]["exported"] + export_status(proxy)["openmeter"]["failed"] == 12
                )
            )
            status = export_status(proxy)["openmeter"]
            ledger = ledger_totals(proxy)
            del ledger["globex"]
            reconcile(openmeter, ledger)
            assert status["exported"] == 8 and status["failed"] == 4
            assert len(openmeter.events) == 8


def test_a_wrong_key_keeps_events_waiting_and_never_shows_the_key(tmp_path: Path) -> None:
    wrong_key = "sk_test_51WrongKeyWrongKeyWrongKey0000000000"
    with FakeStripe(api_key=STRIPE_KEY, event_name="llm_spend") as stripe:
        with running_proxy(tmp_path, export_config(stripe_sink(stripe, api_key=wrong_key))) as proxy:
            charge(proxy, 3)
            wait_for(lambda: export_status(proxy)["stripe"]["last_error"] is not None)
            status = export_status(proxy)["stripe"]
            assert status["pending"] == 3 and status["exported"] == 0 and status["failed"] == 0
            assert "HTTP 401" in status["last_error"] and wrong_key not in status["last_error"]
            assert stripe.events == {}


def test_without_a_sink_nothing_is_queued_and_the_status_is_empty(tmp_path: Path) -> None:
    with running_proxy(tmp_path, export_config()) as proxy:
        charge(proxy, 3)
        assert ledger_totals(proxy)
        assert export_status(proxy) == {}

        async def outbox_rows() -> int:
            from sqlalchemy import text

            async with proxy.state.db.connect() as connection:
                return int((await connection.execute(text("SELECT COUNT(*) FROM usage_outbox"))).scalar_one())

        assert proxy.call(outbox_rows()) == 0
        # Admin only, refused in the OpenAI error envelope.
        with httpx.Client(base_url=proxy.url) as anonymous:
            refused = anonymous.get("/billing/export/status", headers={"Authorization": "Bearer sk-wrong-key-000000"})
        assert refused.status_code == 401 and set(refused.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.postgres
def test_two_instances_on_one_postgres_export_each_charge_once(tmp_path: Path) -> None:
    # One exporter per sink at a time (PostgreSQL's advisory job lock): the receiver gets each event exactly once,
    # not merely counted once, even with both instances charging and exporting.
    url = asyncio.run(make_database_url("postgres", tmp_path))
    try:
        with FakeWebhook(secret="whsec_0123456789abcdefghijklmnopqrstuv") as hook:
            config = export_config(webhook_sink(hook, batch_size=5, timeout_s=5))
            config["general_settings"]["database_url"] = url
            (tmp_path / "a").mkdir()
            (tmp_path / "b").mkdir()
            with running_proxy(tmp_path / "a", config) as first, running_proxy(tmp_path / "b", config) as second:
                charge(first, N // 2)
                charge(second, N // 2)
                wait_for(lambda: len(hook.events) == N)
                ledger = ledger_totals(first)
                ledger_totals(second)  # both flushed
                assert ledger_totals(first) == ledger
                wait_for(lambda: export_status(first)["hook"]["pending"] == 0)
                reconcile(hook, ledger_totals(first))
                assert hook.deliveries == N
                assert export_status(second)["hook"]["exported"] == N
    finally:
        asyncio.run(drop_database(url))
