"""StoreSink: a group's resets of counter subjects go to the keys' rows for key subjects and to customers for the
rest, each at its place among the group's charges."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from haimaker.accounting.recorder import GroupItem
from haimaker.accounting.store_sink import StoreSink
from haimaker.clock import FakeClock
from haimaker.state.counters import SpendReset
from haimaker.state.keys import key_subject
from haimaker.storage import create_engine, session_factory
from haimaker.storage.records import Customer, VirtualKey
from tests.support.factories import T0, make_log


@pytest.fixture
async def sink(migrated_database_url: str) -> AsyncIterator[StoreSink]:
    engine = create_engine(migrated_database_url)
    yield StoreSink(session_factory(engine), FakeClock())
    await engine.dispose()


async def test_resets_in_a_group_go_to_the_keys_rows_for_key_subjects_and_to_customers_for_the_rest(
    sink: StoreSink,
) -> None:
    token = "a" * 64
    await sink.keys.create(VirtualKey(token=token, spend=500, budget_reset_at=T0))
    await sink.customers.create(Customer(user_id="alice", spend=700, spend_reset_at=T0))
    # A customer whose id looks like a token is still a customer: only the key subject names the key.
    await sink.customers.create(Customer(user_id=token, spend=900, spend_reset_at=T0))
    period = T0 + timedelta(days=1)
    before = make_log(request_id="before", end_user="alice", api_key=token, spend=10)
    after = make_log(request_id="after", end_user="alice", api_key=token, spend=3)
    group: list[GroupItem] = [before, SpendReset(key_subject(token), period), SpendReset("alice", period), after]
    assert await sink.write_charges([], group) == 2
    assert await sink.keys.spend_of_many([token]) == {token: (3, period)}
    assert await sink.customers.spend_of_many(["alice", token]) == {"alice": (3, period), token: (900, T0)}
    # Replayed (a journal written twice): the periods have moved on, nothing changes.
    await sink.keys.update(token, {"spend": 5})
    await sink.write_charges([], [SpendReset(key_subject(token), period)])
    assert await sink.keys.spend_of_many([token]) == {token: (5, period)}
