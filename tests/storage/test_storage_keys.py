"""KeyRepository on both engines: round trips, unique tokens and aliases, pages, regenerate, deletes, spend."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.clock import FakeClock
from haimaker.errors import DuplicateError, NotFoundError
from haimaker.storage import ChargeBatch, SpendRepository
from haimaker.storage.keys_repo import KeyRepository
from haimaker.storage.records import VirtualKey
from tests.support.factories import T0, make_log


def make_key(**overrides: Any) -> VirtualKey:
    token = hashlib.sha256(f"sk-{uuid.uuid4().hex}".encode()).hexdigest()
    return replace(VirtualKey(token=token, key_name=f"sk-...{token[-4:]}"), **overrides)


@pytest.fixture
def keys(sessions: async_sessionmaker[AsyncSession], clock: FakeClock) -> KeyRepository:
    return KeyRepository(sessions, clock=clock)


async def test_created_key_round_trips_every_field(keys: KeyRepository) -> None:
    key = make_key(
        key_alias="billing-app",
        expires=T0 + timedelta(days=30),
        models=("gpt-4o", "claude"),
        spend=1_234_567_890_123,
        max_budget=5_000_000_000,
        soft_budget=4_000_000_000,
        budget_duration="30d",
        budget_reset_at=T0 + timedelta(days=1),
        rpm_limit=60,
        tpm_limit=10_000,
        max_parallel_requests=4,
        model_max_budget={"gpt-4o": {"budget_limit": 1.5, "time_period": "1d"}},
        model_rpm_limit={"gpt-4o": 10},
        model_tpm_limit={"gpt-4o": 1000},
        metadata={"team": "core", "nested": {"a": [1, 2]}},
        blocked=True,
        key_type="llm_api",
        allowed_routes=("llm_api_routes",),
        end_user_budget_id="tier",
        customer_id="acme",
        user_id="u1",
        team_id="t1",
        created_at=T0,
        created_by="admin",
        updated_at=T0 + timedelta(hours=1),
        updated_by="admin2",
    )
    assert await keys.create(key) == key
    assert await keys.get(key.token) == key


async def test_unset_timestamps_come_from_the_clock(keys: KeyRepository, clock: FakeClock) -> None:
    created = await keys.create(make_key())
    assert created.created_at == clock.now() and created.updated_at == clock.now()
    assert (created.models, created.metadata, created.allowed_routes, created.spend) == ((), {}, (), 0)


async def test_a_second_key_with_the_same_token_is_refused(keys: KeyRepository) -> None:
    key = await keys.create(make_key(key_alias="first"))
    with pytest.raises(DuplicateError) as excinfo:
        await keys.create(replace(key, key_alias="second"))
    assert excinfo.value.param == "key" and excinfo.value.status_code == 400
    stored = await keys.get(key.token)
    assert stored is not None and stored.key_alias == "first"


async def test_an_alias_held_by_another_key_is_refused_on_create_and_update(keys: KeyRepository) -> None:
    await keys.create(make_key(key_alias="app"))
    other = await keys.create(make_key(key_alias="other"))
    with pytest.raises(DuplicateError) as excinfo:
        await keys.create(make_key(key_alias="app"))
    assert (
        excinfo.value.message == "Key with alias 'app' already exists. Unique key aliases across all keys are required."
    )
    assert excinfo.value.param == "key_alias"
    with pytest.raises(DuplicateError):
        await keys.update(other.token, {"key_alias": "app"})
    # Its own alias again is no conflict.
    updated = await keys.update(other.token, {"key_alias": "other", "rpm_limit": 5})
    assert updated is not None and updated.rpm_limit == 5
    assert await keys.count() == 2


async def test_concurrent_creates_with_one_alias_admit_exactly_one(keys: KeyRepository) -> None:
    results = await asyncio.gather(*(keys.create(make_key(key_alias="racy")) for _ in range(8)), return_exceptions=True)
    assert sum(isinstance(result, VirtualKey) for result in results) == 1
    assert all(isinstance(result, VirtualKey | DuplicateError) for result in results), results
    assert len(await keys.get_by_alias("racy")) == 1


async def test_update_writes_given_fields_and_stamps_updated_at(keys: KeyRepository, clock: FakeClock) -> None:
    key = await keys.create(make_key(key_alias="a", models=("x",), metadata={"k": 1}))
    clock.advance(60)
    updated = await keys.update(
        key.token, {"key_alias": None, "models": ["y", "z"], "metadata": {"k": 2}, "max_budget": None, "spend": 7}
    )
    assert updated is not None
    assert (updated.key_alias, updated.models, updated.metadata, updated.spend) == (None, ("y", "z"), {"k": 2}, 7)
    assert updated.updated_at == clock.now() and updated.created_at == key.created_at
    assert await keys.get(key.token) == updated
    assert await keys.update("nope", {"rpm_limit": 1}) is None
    with pytest.raises(ValueError, match="token"):
        await keys.update(key.token, {"token": "other"})


async def test_pages_are_newest_first_and_filter_by_exact_alias(keys: KeyRepository, clock: FakeClock) -> None:
    made = []
    for index in range(5):
        made.append(await keys.create(make_key(key_alias=f"k{index}")))
        clock.advance(1)
    newest_first = [key.token for key in reversed(made)]
    assert [key.token for key in await keys.list_page(1, 2)] == newest_first[:2]
    assert [key.token for key in await keys.list_page(3, 2)] == newest_first[4:]
    assert await keys.list_page(4, 2) == []
    assert await keys.count() == 5
    assert [key.token for key in await keys.list_page(1, 10, key_alias="k3")] == [made[3].token]
    assert await keys.count(key_alias="k") == 0 and await keys.count(key_alias="k3") == 1
    assert [key.token for key in await keys.get_by_alias("k1")] == [made[1].token]
    assert len(await keys.list_all()) == 5


async def test_replace_token_keeps_the_row_its_spend_and_creation(keys: KeyRepository, clock: FakeClock) -> None:
    old = await keys.create(make_key(key_alias="app", spend=42, rpm_limit=3, created_by="admin"))
    clock.advance(10)
    fresh = make_key(key_alias="app", rpm_limit=9, spend=0)
    new = await keys.replace_token(old.token, replace(old, token=fresh.token, key_name=fresh.key_name, rpm_limit=9))
    assert new is not None
    assert (new.token, new.key_name, new.rpm_limit, new.spend) == (fresh.token, fresh.key_name, 9, 42)
    assert (new.created_at, new.created_by, new.updated_at) == (old.created_at, "admin", clock.now())
    assert await keys.get(old.token) is None
    assert await keys.get(fresh.token) == new
    assert await keys.replace_token(old.token, make_key()) is None


async def test_replace_token_refuses_a_token_in_use(keys: KeyRepository) -> None:
    first = await keys.create(make_key())
    second = await keys.create(make_key())
    with pytest.raises(DuplicateError) as excinfo:
        await keys.replace_token(first.token, replace(first, token=second.token))
    assert excinfo.value.param == "new_key"
    assert await keys.get(first.token) == first


async def test_delete_many_is_all_or_nothing(keys: KeyRepository) -> None:
    a, b = await keys.create(make_key()), await keys.create(make_key())
    with pytest.raises(NotFoundError) as excinfo:
        await keys.delete_many([a.token, "f" * 64])
    assert excinfo.value.status_code == 404 and "f" * 64 in excinfo.value.message
    assert await keys.count() == 2
    assert await keys.delete_many([a.token, b.token, a.token]) == 2
    assert await keys.count() == 0
    assert await keys.delete_many([]) == 0


async def test_set_blocked_flips_only_blocked(keys: KeyRepository) -> None:
    key = await keys.create(make_key(rpm_limit=4))
    blocked = await keys.set_blocked(key.token, True)
    assert blocked is not None and blocked.blocked and blocked.rpm_limit == 4
    unblocked = await keys.set_blocked(key.token, False)
    assert unblocked is not None and not unblocked.blocked
    assert await keys.set_blocked("missing", True) is None


async def test_charges_add_to_the_key_of_each_log_in_the_same_batch(
    keys: KeyRepository, spend: SpendRepository
) -> None:
    key = await keys.create(make_key(spend=100))
    other = await keys.create(make_key())
    logs = [
        make_log(api_key=key.token, spend=1_000),
        make_log(api_key=key.token, spend=2_000),
        make_log(api_key=key.token, spend=5_000, status="failure"),
        make_log(api_key=other.token, spend=10),
        make_log(api_key="0" * 64, spend=99),  # the master key, or a deleted key: no row
        make_log(api_key="", spend=99),
    ]
    assert await spend.write_batch(ChargeBatch(logs=logs)) == 6
    assert await spend.write_batch(ChargeBatch(logs=logs)) == 0  # a retried batch adds nothing
    found = await keys.spend_of_many([key.token, other.token, "missing"])
    assert found == {key.token: (3_100, None), other.token: (10, None)}
    assert [log.api_key for log in await spend.list_logs(api_key=other.token)] == [other.token]


async def test_reset_spend_moves_only_keys_whose_period_ended(keys: KeyRepository) -> None:
    period = T0 + timedelta(days=1)
    due = await keys.create(make_key(spend=50, budget_reset_at=T0))
    unset = await keys.create(make_key(spend=60))
    current = await keys.create(make_key(spend=70, budget_reset_at=period))
    untouched = await keys.create(make_key(spend=80, budget_reset_at=T0))
    tokens = [due.token, unset.token, current.token, "missing"]
    assert await keys.reset_spend(tokens, next_reset_at=period, ending_before=period) == 2
    assert await keys.reset_spend(tokens, next_reset_at=period, ending_before=period) == 0  # replayed: no-op
    found = await keys.spend_of_many([due.token, unset.token, current.token, untouched.token])
    assert found == {
        due.token: (0, period),
        unset.token: (0, period),
        current.token: (70, period),
        untouched.token: (80, T0),
    }
