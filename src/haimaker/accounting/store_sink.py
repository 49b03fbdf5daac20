"""The storage side of the spend recorder: grouped charges and resets, written transactionally (lives in
accounting/ because it speaks the recorder's types; storage/ stays below it)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from haimaker.accounting.recorder import BudgetReset
from haimaker.clock import Clock
from haimaker.state.keys import token_of_subject
from haimaker.storage.budgets_repo import BudgetRepository
from haimaker.storage.customers_repo import CustomerRepository
from haimaker.storage.keys_repo import KeyRepository
from haimaker.storage.records import Customer, SpendLog
from haimaker.storage.spend_repo import ChargeBatch, SpendRepository


class StoreSink:
    """Repositories bundled for the recorder, the services and the jobs."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self.sessions = sessions
        self.budgets = BudgetRepository(sessions, clock=clock)
        self.customers = CustomerRepository(sessions, clock=clock)
        self.keys = KeyRepository(sessions, clock=clock)
        self.spend = SpendRepository(sessions, clock=clock)

    async def write_charges(self, new_customers: list[Customer], logs: list[SpendLog]) -> int:
        return await self.spend.write_batch(ChargeBatch(new_customers=new_customers, logs=logs))

    async def reset_customers(self, user_ids: list[str], next_reset_at: datetime) -> None:
        """Reset the spend of counter subjects: virtual keys (`state.keys.key_subject` ids) and customers."""
        tokens: list[str] = []
        customer_ids: list[str] = []
        for subject in user_ids:
            token = token_of_subject(subject)
            if token is not None:
                tokens.append(token)
            else:
                customer_ids.append(subject)
        # Only a stored period that ends before the new one: a reset written twice (a replayed journal) is a no-op.
        if tokens:
            await self.keys.reset_spend(tokens, next_reset_at=next_reset_at, ending_before=next_reset_at)
        if customer_ids:
            await self.customers.reset_spend(customer_ids, next_reset_at=next_reset_at, ending_before=next_reset_at)

    async def reset_budget(self, reset: BudgetReset) -> None:
        await self.customers.reset_spend(
            budget_id=reset.budget_id,
            include_unbudgeted=reset.include_unbudgeted,
            next_reset_at=reset.next_reset_at,
            due_at=reset.now,
        )
