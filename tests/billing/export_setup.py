"""The proxy and fake sinks of the usage export tests, and the reconciliation of what the sinks counted with the
ledger (the spend logs)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import openai
from sqlalchemy import text

from tests.billing.fakes import FakeBilling, FakeLago, FakeOpenMeter, FakeStripe, FakeWebhook
from tests.support.proxy import RunningProxy, base_config

STRIPE_KEY: Final = "sk_test_51HaimakerExportKey0123456789abcdef"
LAGO_KEY: Final = "lago-api-key-5d7c1f0e-8a43-4c39-9d0b-2b1e6f7a9c11"
OPENMETER_KEY: Final = "om_0123456789abcdef0123456789abcdef"
WEBHOOK_SECRET: Final = "whsec_0123456789abcdefghijklmnopqrstuv"
CUSTOMERS: Final = ("acme", "globex", "initech")
STRIPE_CUSTOMER_IDS: Final = {"acme": "cus_Acme000001"}
# Fast retries and short timeouts, so the fault tests stay quick.
FAST: Final = {"timeout_s": 0.5, "retry_backoff_s": 0.05, "max_backoff_s": 0.2, "poll_interval_s": 0.05}


def stripe_sink(fake: FakeStripe, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "stripe",
        "type": "stripe",
        "api_base": fake.url,
        "api_key": STRIPE_KEY,
        "event_name": fake.event_name,
        "customer_ids": STRIPE_CUSTOMER_IDS,
        **FAST,
        **overrides,
    }


def lago_sink(fake: FakeLago, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "lago",
        "type": "lago",
        "api_base": fake.url,
        "api_key": LAGO_KEY,
        "event_name": fake.code,
        "batch_size": 7,
        **FAST,
        **overrides,
    }


def openmeter_sink(fake: FakeOpenMeter, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "openmeter",
        "type": "openmeter",
        "api_base": fake.url,
        "api_key": OPENMETER_KEY,
        "event_name": fake.event_type,
        "batch_size": 10,
        **FAST,
        **overrides,
    }


def webhook_sink(fake: FakeWebhook, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "hook",
        "type": "webhook",
        "api_base": fake.url + fake.path,
        "signing_secret": WEBHOOK_SECRET,
        "batch_size": 25,
        **FAST,
        **overrides,
    }


def export_config(*sinks: dict[str, Any]) -> dict[str, Any]:
    return base_config(general_settings={"master_key": "sk-test-master-1234", "usage_export": list(sinks)})


def charge(proxy: RunningProxy, count: int, customers: Iterable[str] = CUSTOMERS) -> None:
    """`count` charged chat requests through the real SDK, spread over `customers`."""
    names = list(customers)
    with openai.OpenAI(base_url=proxy.url + "/v1", api_key=proxy.master_key, max_retries=0) as client:
        for i in range(count):
            client.chat.completions.create(
                model="gpt-3.5-turbo",
                messages=[{"role": "user", "content": f"request {i} " + "word " * (i % 9)}],
                user=names[i % len(names)],
            )


async def _ledger(proxy: RunningProxy) -> dict[str, int]:
    await proxy.state.recorder.flush()
    async with proxy.state.db.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT end_user, SUM(spend) AS spend FROM spend_logs WHERE status = 'success' AND end_user <> '' "
                "GROUP BY end_user"
            )
        )
        return {row.end_user: int(row.spend) for row in rows}


def ledger_totals(proxy: RunningProxy) -> dict[str, int]:
    """Charged spend per customer in the durable ledger (nano-dollars)."""
    totals: dict[str, int] = proxy.call(_ledger(proxy))
    return totals


def reconcile(fake: FakeBilling, ledger: Mapping[str, int], customer_ids: Mapping[str, str] | None = None) -> None:
    """The sink's distinct events add up to the ledger, per customer, to the nano-dollar."""
    mapping = customer_ids or {}
    expected = {mapping.get(customer, customer): spend for customer, spend in ledger.items()}
    assert fake.totals() == expected, (fake.totals(), expected)
    assert fake.violations == []


def export_status(proxy: RunningProxy) -> dict[str, dict[str, Any]]:
    with proxy.client() as client:
        response = client.get("/billing/export/status")
    assert response.status_code == 200, response.text
    return {sink["name"]: sink for sink in response.json()["sinks"]}
