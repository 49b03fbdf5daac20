"""CustomerRepository on both engines: duplicates, all-or-nothing deletes, block upserts, key pages, prefix search,
resets (pages and counts at scale: test_storage_customers_scale.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from haimaker.clock import FakeClock
from haimaker.errors import DuplicateError, NotFoundError
from haimaker.storage import BudgetRepository, ChargeBatch, Customer, CustomerRepository, SpendRepository
from haimaker.storage.customers_repo import _next_prefix
from tests.support.factories import T0, make_budget, make_customer, make_log


async def test_created_customer_round_trips_every_field(
    customers: CustomerRepository, budgets: BudgetRepository
) -> None:
    await budgets.create(make_budget(budget_id="tier"))
    customer = Customer(
        user_id="acme-42",
        alias="Acme",
        spend=1_234_567_890_123,
        blocked=True,
        allowed_model_region="eu",
        default_model="gpt-4o",
        models=("gpt-4o", "claude"),
        budget_id="tier",
        spend_reset_at=T0 + timedelta(days=1),
        created_at=T0,
    )
    assert await customers.create(customer) == customer
    assert await customers.get("acme-42") == customer


async def test_unset_created_at_comes_from_the_clock(customers: CustomerRepository, clock: FakeClock) -> None:
    created = await customers.create(make_customer(user_id="a"))
    assert created.created_at == clock.now()
    assert created.models == ()
    assert created.spend == 0


async def test_duplicate_customer_is_refused_with_litellm_message(customers: CustomerRepository) -> None:
    await customers.create(make_customer(user_id="dup", alias="first"))
    with pytest.raises(DuplicateError) as excinfo:
        await customers.create(make_customer(user_id="dup", alias="second"))
    assert excinfo.value.message == "Customer already exists, passed user_id=dup. Please pass a new user_id."
    assert excinfo.value.param == "user_id"
    stored = await customers.get("dup")
    assert stored is not None
    assert stored.alias == "first"


async def test_customer_with_unknown_budget_is_refused(customers: CustomerRepository) -> None:
    with pytest.raises(NotFoundError, match="Budget with id 'ghost' does not exist"):
        await customers.create(make_customer(user_id="a", budget_id="ghost"))
    assert await customers.get("a") is None


async def test_update_writes_given_fields(customers: CustomerRepository, budgets: BudgetRepository) -> None:
    await budgets.create(make_budget(budget_id="tier"))
    await customers.create(make_customer(user_id="a", alias="A", models=("x",)))
    updated = await customers.update("a", {"alias": None, "models": ["y", "z"], "budget_id": "tier", "blocked": True})
    assert updated is not None
    assert (updated.alias, updated.models, updated.budget_id, updated.blocked) == (None, ("y", "z"), "tier", True)
    assert await customers.get("a") == updated


async def test_update_of_unknown_customer_is_none(customers: CustomerRepository) -> None:
    assert await customers.update("nope", {"alias": "x"}) is None


async def test_update_to_unknown_budget_is_refused(customers: CustomerRepository) -> None:
    await customers.create(make_customer(user_id="a"))
    with pytest.raises(NotFoundError, match="ghost"):
        await customers.update("a", {"budget_id": "ghost"})
    with pytest.raises(ValueError, match="user_id"):
        await customers.update("a", {"user_id": "b"})


async def test_delete_many_deletes_all_given_ids(customers: CustomerRepository) -> None:
    for user_id in ("a", "b", "c"):
        await customers.create(make_customer(user_id=user_id))
    assert await customers.delete_many(["a", "b", "a"]) == 2
    assert [customer.user_id for customer in await customers.list_all()] == ["c"]


async def test_delete_many_with_a_missing_id_deletes_nothing(customers: CustomerRepository) -> None:
    for user_id in ("a", "b"):
        await customers.create(make_customer(user_id=user_id))
    with pytest.raises(NotFoundError) as excinfo:
        await customers.delete_many(["a", "x", "b", "y"])
    assert excinfo.value.message == "End User Id(s)=x, y do not exist in db"
    assert excinfo.value.param == "user_ids"
    assert [customer.user_id for customer in await customers.list_all()] == ["a", "b"]


async def test_deleting_a_customer_keeps_its_budget_and_spend_logs(
    customers: CustomerRepository, budgets: BudgetRepository, spend: SpendRepository
) -> None:
    await budgets.create(make_budget(budget_id="tier"))
    await customers.create(make_customer(user_id="a", budget_id="tier"))
    await spend.write_batch(ChargeBatch(logs=[make_log(request_id="r1", end_user="a")]))
    assert await customers.delete_many(["a"]) == 1
    assert await budgets.get("tier") is not None
    assert [log.request_id for log in await spend.list_logs(end_user="a")] == ["r1"]
    assert len(await spend.daily_activity(end_user_ids=["a"])) == 1


async def test_set_blocked_creates_missing_customers_and_keeps_other_fields(customers: CustomerRepository) -> None:
    await customers.create(make_customer(user_id="known", alias="K", spend=42))
    blocked = await customers.set_blocked(["new", "known", "new"], True)
    assert [(c.user_id, c.blocked) for c in blocked] == [("new", True), ("known", True)]
    known = await customers.get("known")
    assert known is not None
    assert (known.alias, known.spend, known.blocked) == ("K", 42, True)
    new = await customers.get("new")
    assert new is not None
    assert (new.spend, new.models, new.blocked) == (0, (), True)

    unblocked = await customers.set_blocked(["known"], False)
    assert [c.blocked for c in unblocked] == [False]
    assert await customers.set_blocked([], True) == []


async def test_list_page_orders_by_id_bytewise_and_pages_by_key(customers: CustomerRepository) -> None:
    ids = ["b", "A", "a_b", "aB", "a", "Z", "é", "10", "9"]
    for user_id in ids:
        await customers.create(make_customer(user_id=user_id))
    ordered = sorted(ids)
    first = await customers.list_page(4)
    second = await customers.list_page(4, after=first[-1].user_id)
    third = await customers.list_page(4, after=second[-1].user_id)
    assert [[c.user_id for c in page] for page in (first, second, third)] == [ordered[0:4], ordered[4:8], ordered[8:]]
    assert await customers.list_page(4, after=third[-1].user_id) == []
    # `before` gives the rows just before, still in ascending order; `offset` skips rows of the scan.
    assert [c.user_id for c in await customers.list_page(3, before=ordered[5])] == ordered[2:5]
    assert [c.user_id for c in await customers.list_page(4, offset=4)] == ordered[4:8]
    # A cursor that names no customer still lands between the neighbours.
    assert [c.user_id for c in await customers.list_page(2, after="aC")] == ["a_b", "b"]
    assert [c.user_id for c in await customers.list_all()] == ordered
    with pytest.raises(ValueError):
        await customers.list_page(0)
    with pytest.raises(ValueError):
        await customers.list_page(1, after="a", before="b")


async def test_search_is_an_id_prefix_compared_bytewise(customers: CustomerRepository) -> None:
    ids = ["acme", "acme-1", "acme-2", "ACME-3", "acmf", "acm", "x-acme", "100%_sure", "100 sure", "é-1", "éa"]
    for user_id in ids:
        await customers.create(make_customer(user_id=user_id, alias="acme everywhere"))
    assert [c.user_id for c in await customers.list_page(50, prefix="acme")] == ["acme", "acme-1", "acme-2"]
    assert [c.user_id for c in await customers.list_page(1, prefix="acme", after="acme")] == ["acme-1"]
    assert await customers.count("acme") == 3
    assert await customers.count("acme", up_to=2) == 2
    # LIKE wildcards are plain characters; non-ASCII prefixes work the same way.
    assert [c.user_id for c in await customers.list_page(50, prefix="100%")] == ["100%_sure"]
    assert [c.user_id for c in await customers.list_page(50, prefix="é")] == ["é-1", "éa"]
    assert await customers.count(None) == len(ids)
    assert await customers.count("") == len(ids)


@pytest.mark.parametrize(
    ("prefix", "upper"),
    [("abc", "abd"), ("a\U0010ffff", "b"), ("\U0010ffff", None), ("a\ud7ff", "a\ue000"), ("", None)],
)
def test_the_prefix_range_ends_at_the_next_possible_prefix(prefix: str, upper: str | None) -> None:
    assert _next_prefix(prefix) == upper


async def test_a_prefix_ending_in_the_last_code_point_still_matches(customers: CustomerRepository) -> None:
    for user_id in ("a\U0010ffff", "a\U0010ffffz", "b"):
        await customers.create(make_customer(user_id=user_id))
    assert [c.user_id for c in await customers.list_page(10, prefix="a\U0010ffff")] == ["a\U0010ffff", "a\U0010ffffz"]


async def test_counts_on_a_budget_stop_at_the_bound(customers: CustomerRepository, budgets: BudgetRepository) -> None:
    await budgets.create(make_budget(budget_id="tier"))
    for index in range(5):
        await customers.create(make_customer(user_id=f"c{index}", budget_id="tier" if index < 3 else None))
    assert await customers.count_on_budget("tier", up_to=2) == 2
    assert await customers.count_on_budget("tier", up_to=10) == 3
    assert await customers.count_on_budget("other", up_to=2) == 0


async def test_reset_spend_by_ids(customers: CustomerRepository) -> None:
    for user_id in ("a", "b", "c"):
        await customers.create(make_customer(user_id=user_id, spend=10))
    next_reset = T0 + timedelta(days=1)
    assert await customers.reset_spend(["a", "b", "ghost"], next_reset_at=next_reset) == 2
    by_id = {c.user_id: c for c in await customers.list_all()}
    assert (by_id["a"].spend, by_id["a"].spend_reset_at) == (0, next_reset)
    assert (by_id["c"].spend, by_id["c"].spend_reset_at) == (10, None)


async def test_reset_spend_by_budget_and_unbudgeted(customers: CustomerRepository, budgets: BudgetRepository) -> None:
    await budgets.create(make_budget(budget_id="free"))
    await budgets.create(make_budget(budget_id="pro"))
    for user_id, budget_id in [("f1", "free"), ("f2", "free"), ("p1", "pro"), ("n1", None)]:
        await customers.create(make_customer(user_id=user_id, budget_id=budget_id, spend=7))
    assert await customers.reset_spend(budget_id="free", next_reset_at=None) == 2
    assert {c.user_id: c.spend for c in await customers.list_all()} == {"f1": 0, "f2": 0, "p1": 7, "n1": 7}
    assert await customers.reset_spend(budget_id="pro", include_unbudgeted=True, next_reset_at=T0) == 2
    assert {c.user_id: c.spend for c in await customers.list_all()} == {"f1": 0, "f2": 0, "p1": 0, "n1": 0}
    # Overlapping selectors count each customer once.
    assert await customers.reset_spend(["p1", "f1"], budget_id="pro", next_reset_at=T0) == 2
    with pytest.raises(ValueError):
        await customers.reset_spend(next_reset_at=T0)


async def test_reset_spend_with_due_at_skips_customers_already_in_a_new_period(customers: CustomerRepository) -> None:
    await customers.create(make_customer(user_id="due", spend=5, spend_reset_at=T0 - timedelta(seconds=1)))
    await customers.create(make_customer(user_id="never-reset", spend=5, spend_reset_at=None))
    await customers.create(make_customer(user_id="fresh", spend=5, spend_reset_at=T0 + timedelta(days=1)))
    next_reset = T0 + timedelta(days=30)
    assert await customers.reset_spend(include_unbudgeted=True, next_reset_at=next_reset, due_at=T0) == 2
    # A second instance repeating the same reset finds nothing left to do.
    assert await customers.reset_spend(include_unbudgeted=True, next_reset_at=next_reset, due_at=T0) == 0
    assert {c.user_id: c.spend for c in await customers.list_all()} == {"due": 0, "never-reset": 0, "fresh": 5}


async def test_spend_of_many_reads_existing_customers_only(
    spend: SpendRepository, customers: CustomerRepository
) -> None:
    reset_at = datetime(2026, 2, 1, tzinfo=UTC)
    await customers.create(make_customer(user_id="alice", spend=7, spend_reset_at=reset_at))
    await customers.create(make_customer(user_id="bob"))
    many = [f"ghost-{index}" for index in range(1_200)]  # more than one query's worth of ids
    found = await customers.spend_of_many(["alice", "bob", "alice", *many])
    assert found == {"alice": (7, reset_at), "bob": (0, None)}
