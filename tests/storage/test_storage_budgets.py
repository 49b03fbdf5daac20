"""BudgetRepository on both engines: round trips, duplicates, partial updates, delete semantics, reset selection."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from haimaker.clock import FakeClock
from haimaker.errors import DuplicateError
from haimaker.storage import Budget, BudgetRepository, CustomerRepository
from haimaker.storage.budgets_repo import is_private_budget
from tests.support.factories import T0, make_budget, make_customer


async def test_created_budget_round_trips_every_field(budgets: BudgetRepository) -> None:
    budget = Budget(
        budget_id="pro-tier",
        max_budget=4_000_000_000,
        soft_budget=3_500_000_000,
        max_parallel_requests=4,
        tpm_limit=100_000,
        rpm_limit=60,
        tpd_limit=5_000_000_000,
        model_max_budget={"gpt-4o": {"max_budget": 1.5, "budget_duration": "1d", "tpm_limit": 10}},
        budget_duration="30d",
        budget_reset_at=T0 + timedelta(days=30),
        created_at=T0,
        created_by="admin",
        updated_at=T0 + timedelta(seconds=1),
        updated_by="admin2",
    )
    assert await budgets.create(budget) == budget
    assert await budgets.get("pro-tier") == budget


async def test_unset_timestamps_come_from_the_clock(budgets: BudgetRepository, clock: FakeClock) -> None:
    created = await budgets.create(make_budget())
    assert created.created_at == clock.now()
    assert created.updated_at == clock.now()
    assert created.created_by == "default_user_id"


async def test_duplicate_budget_id_is_refused_and_first_budget_kept(budgets: BudgetRepository) -> None:
    await budgets.create(make_budget(budget_id="tier", max_budget=1))
    with pytest.raises(DuplicateError) as excinfo:
        await budgets.create(make_budget(budget_id="tier", max_budget=2))
    assert excinfo.value.message == "Budget with id 'tier' already exists."
    assert excinfo.value.param == "budget_id"
    stored = await budgets.get("tier")
    assert stored is not None
    assert stored.max_budget == 1


async def test_get_unknown_budget_is_none(budgets: BudgetRepository) -> None:
    assert await budgets.get("nope") is None


async def test_get_many_keeps_the_order_given_and_omits_unknown_ids(budgets: BudgetRepository) -> None:
    for budget_id in ("a", "b", "c"):
        await budgets.create(make_budget(budget_id=budget_id))
    found = await budgets.get_many(["c", "missing", "a", "c"])
    assert [budget.budget_id for budget in found] == ["c", "a"]
    assert await budgets.get_many([]) == []


async def test_list_all_is_ordered_by_id(budgets: BudgetRepository) -> None:
    for budget_id in ("b", "a", "C"):
        await budgets.create(make_budget(budget_id=budget_id))
    assert [budget.budget_id for budget in await budgets.list_all()] == ["C", "a", "b"]


async def test_update_writes_only_given_fields_and_none_clears(budgets: BudgetRepository, clock: FakeClock) -> None:
    await budgets.create(make_budget(budget_id="t", max_budget=10, rpm_limit=5, budget_duration="1d"))
    clock.advance(60)
    updated = await budgets.update("t", {"rpm_limit": 7, "budget_duration": None, "updated_by": "ops"})
    assert updated is not None
    assert (updated.max_budget, updated.rpm_limit, updated.budget_duration) == (10, 7, None)
    assert updated.updated_by == "ops"
    assert updated.updated_at == clock.now()
    assert updated.created_at == clock.now() - timedelta(seconds=60)
    assert await budgets.get("t") == updated


async def test_update_of_unknown_budget_is_none(budgets: BudgetRepository) -> None:
    assert await budgets.update("nope", {"rpm_limit": 1}) is None
    assert await budgets.update("nope", {}) is None


async def test_update_refuses_unknown_fields_and_the_id(budgets: BudgetRepository) -> None:
    await budgets.create(make_budget(budget_id="t"))
    with pytest.raises(ValueError, match="budget_id"):
        await budgets.update("t", {"budget_id": "other"})
    with pytest.raises(ValueError, match="colour"):
        await budgets.update("t", {"colour": "red"})


async def test_delete_returns_the_budget_and_unlinks_its_customers(
    budgets: BudgetRepository, customers: CustomerRepository
) -> None:
    budget = await budgets.create(make_budget(budget_id="tier"))
    await customers.create(make_customer(user_id="a", budget_id="tier", spend=5))
    await customers.create(make_customer(user_id="b", budget_id="tier"))
    assert await budgets.delete("tier") == budget
    assert await budgets.get("tier") is None
    a = await customers.get("a")
    b = await customers.get("b")
    assert a is not None
    assert b is not None
    assert (a.budget_id, a.spend) == (None, 5)
    assert b.budget_id is None
    assert await budgets.delete("tier") is None


async def test_count_customers_by_budget(budgets: BudgetRepository, customers: CustomerRepository) -> None:
    await budgets.create(make_budget(budget_id="free"))
    await budgets.create(make_budget(budget_id="pro"))
    await budgets.create(make_budget(budget_id="unused"))
    for user_id, budget_id in [("a", "free"), ("b", "free"), ("c", "pro"), ("d", None)]:
        await customers.create(make_customer(user_id=user_id, budget_id=budget_id))
    assert await budgets.count_customers_by_budget() == {"free": 2, "pro": 1}
    # Only the budgets asked about (those without customers are left out, as above).
    assert await budgets.count_customers_by_budget(["pro", "unused", "ghost"]) == {"pro": 1}
    assert await budgets.count_customers_by_budget([]) == {}


async def test_list_tiers_leaves_out_exactly_the_private_budgets(
    budgets: BudgetRepository, customers: CustomerRepository
) -> None:
    private, shared, fresh, default = (str(uuid.uuid4()) for _ in range(4))
    linked = {private: 1, shared: 2, fresh: 0, default: 1, "named": 1, f"{{{private[:34]}}}": 1}
    for budget_id, count in linked.items():
        await budgets.create(make_budget(budget_id=budget_id))
        for n in range(count):
            await customers.create(make_customer(user_id=f"{budget_id}-{n}", budget_id=budget_id))
    listed = await budgets.list_tiers(default)
    # SQL and Python apply the same rule.
    assert [(b.budget_id, n) for b, n in listed] == sorted(
        (budget_id, count) for budget_id, count in linked.items() if not is_private_budget(budget_id, count, default)
    )
    assert private not in {b.budget_id for b, _ in listed} and len(listed) == len(linked) - 1
    without_default = {b.budget_id for b, _ in await budgets.list_tiers(None)}
    assert without_default == set(linked) - {private, default}


async def test_due_for_reset_selects_budgets_with_a_duration_whose_instant_passed_or_is_unset(
    budgets: BudgetRepository,
) -> None:
    now = T0
    await budgets.create(make_budget(budget_id="past", budget_duration="1d", budget_reset_at=now - timedelta(hours=1)))
    await budgets.create(make_budget(budget_id="exactly-now", budget_duration="1d", budget_reset_at=now))
    await budgets.create(make_budget(budget_id="unset", budget_duration="1d", budget_reset_at=None))
    await budgets.create(make_budget(budget_id="future", budget_duration="1d", budget_reset_at=now + timedelta(1)))
    await budgets.create(make_budget(budget_id="no-duration", budget_reset_at=now - timedelta(days=1)))
    due = await budgets.due_for_reset(now)
    assert [budget.budget_id for budget in due] == ["exactly-now", "past", "unset"]
