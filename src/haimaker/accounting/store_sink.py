"""The storage side of the spend recorder: grouped charges and resets, written transactionally (lives in
accounting/ because it speaks the recorder's types; storage/ stays below it).

A group's resets name counter subjects: a virtual key's (`state.keys.key_subject`) resets the key's row, any other
id the customer's. Each keeps its place among the group's charges (`BatchReset.position`).
"""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.accounting.recorder import BudgetReset, GroupItem
from haimaker.clock import Clock
from haimaker.state.keys import token_of_subject
from haimaker.storage.budgets_repo import BudgetRepository
from haimaker.storage.customers_repo import CustomerRepository
from haimaker.storage.keys_repo import KeyRepository
from haimaker.storage.records import Customer, SpendLog
from haimaker.storage.spend_repo import BatchReset, ChargeBatch, SpendRepository


class StoreSink:
    """Repositories bundled for the recorder, the services and the jobs."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock, *, export_usage: bool = False) -> None:
        self.sessions = sessions
        self.budgets = BudgetRepository(sessions, clock=clock)
        self.customers = CustomerRepository(sessions, clock=clock)
        self.keys = KeyRepository(sessions, clock=clock)
        self.spend = SpendRepository(sessions, clock=clock, export_usage=export_usage)

    async def write_charges(self, new_customers: list[Customer], items: list[GroupItem]) -> int:
        """Write a group of charges and resets in one transaction; returns how many charges were new."""
        logs: list[SpendLog] = []
        customer_resets: list[BatchReset] = []
        key_resets: list[BatchReset] = []
        for item in items:
            if isinstance(item, SpendLog):
                logs.append(item)
                continue
            token = token_of_subject(item.customer_id)
            if token is not None:
                key_resets.append(BatchReset(token, item.next_reset_at, len(logs)))
            else:
                customer_resets.append(BatchReset(item.customer_id, item.next_reset_at, len(logs)))
        batch = ChargeBatch(new_customers, logs, customer_resets, key_resets)
        return await self.spend.write_batch(batch)

    async def reset_budget(self, reset: BudgetReset) -> None:
        await self.customers.reset_spend(
            budget_id=reset.budget_id,
            include_unbudgeted=reset.include_unbudgeted,
            next_reset_at=reset.next_reset_at,
            due_at=reset.now,
        )
