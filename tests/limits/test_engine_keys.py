"""The budget engine with a virtual key, in process: what a failed call gives back, what end-user cost tracking off
still charges, and which models a key's `models` admit."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from haimaker.accounting.pricing import ModelPrice, Usage
from haimaker.clock import FakeClock
from haimaker.limits.engine import BudgetEngine, GroupPrice, key_allows_model
from haimaker.periods import next_reset_function
from haimaker.state.catalog import Catalog
from haimaker.state.keys import key_model_subject, key_subject
from haimaker.state.memory import MemoryCounterStore
from haimaker.storage.records import Budget, VirtualKey
from tests.state.state_setup import RecordedResets

PRICE = ModelPrice(Decimal("0.000001"), Decimal("0.000002"))
GROUP = GroupPrice(PRICE, 100)
KEY = VirtualKey(
    token="a" * 64,
    key_name="sk-...abcd",
    key_alias="app",
    max_budget=10**9,
    rpm_limit=100,
    model_rpm_limit={"gpt-4o": 5},
)


def _engine() -> tuple[BudgetEngine, MemoryCounterStore]:
    clock = FakeClock(datetime(2026, 1, 15, tzinfo=UTC))
    catalog = Catalog()
    catalog.load([], [Budget(budget_id="tier", max_budget=10**9, rpm_limit=50)])
    store = MemoryCounterStore(clock, next_reset_function("UTC", "00:00"), RecordedResets(), budget_status_code=400)
    engine = BudgetEngine(
        catalog,
        store,
        clock,
        fail_closed=False,
        reservation_enabled=True,
        block_unpriced=False,
        default_max_output_tokens=100,
    )
    return engine, store


async def test_a_failed_call_gives_back_what_it_reserved_on_the_key_its_model_and_the_customer() -> None:
    engine, store = _engine()
    ticket = await engine.admit("c1", "gpt-4o", GROUP, prompt_tokens=10, max_output_tokens=50, n=1, key=KEY)
    assert [r.customer_id for r in ticket.key_reservations] == [
        key_subject(KEY.token),
        key_model_subject(KEY.token, "gpt-4o"),
    ]
    assert store._counters[key_subject(KEY.token)].reserved > 0

    engine.release(ticket)

    own = store._counters[key_subject(KEY.token)]
    assert (own.reserved, own.window_tokens) == (0, 0)
    assert store._counters[key_model_subject(KEY.token, "gpt-4o")].window_tokens == 0
    assert store.spend(key_subject(KEY.token)) == 0


async def test_with_end_user_cost_tracking_off_the_key_is_charged_and_the_customer_is_not() -> None:
    engine, store = _engine()
    engine.catalog.default_budget_id = "tier"
    ticket = await engine.admit("c1", "gpt-4o", GROUP, prompt_tokens=10, max_output_tokens=50, n=1, key=KEY)
    assert ticket.reservation is not None

    settlement = engine.settle(ticket, PRICE, Usage(prompt_tokens=10, completion_tokens=5), charge_customer=False)

    assert settlement.cost == 20_000  # 10 x 1,000 + 5 x 2,000 nano-dollars
    assert store.spend(key_subject(KEY.token)) == 20_000
    assert not store.spend("c1")
    assert store._counters["c1"].reserved == 0  # the customer's reservation was given back


@pytest.mark.parametrize(
    ("models", "model", "allowed"),
    [
        ((), "anything", True),
        (("all-proxy-models",), "anything", True),
        (("gpt-4o",), "gpt-4o", True),
        (("gpt-4o",), "gpt-4o-mini", False),
        (("openai/*",), "openai/gpt-4o", True),
        (("openai/*",), "claude", False),
    ],
)
def test_a_keys_models_admit_exact_names_prefixes_and_all_proxy_models(
    models: tuple[str, ...], model: str, allowed: bool
) -> None:
    assert key_allows_model(VirtualKey(token="b" * 64, models=models), model) is allowed
