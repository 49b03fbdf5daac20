"""Record factories for tests: `make_x(**overrides)` returns a fresh record with sensible defaults."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from haimaker.storage import Budget, Customer, SpendLog

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def make_budget(**overrides: Any) -> Budget:
    return replace(Budget(budget_id=f"budget-{uuid.uuid4().hex[:8]}"), **overrides)


def make_customer(**overrides: Any) -> Customer:
    return replace(Customer(user_id=f"cust-{uuid.uuid4().hex[:8]}"), **overrides)


def make_log(**overrides: Any) -> SpendLog:
    start = overrides.pop("start_time", T0)
    log = SpendLog(
        request_id=f"req-{uuid.uuid4().hex}",
        end_user="alice",
        model="gpt-4o",
        model_id="deployment-1",
        model_group="gpt-4o",
        custom_llm_provider="openai",
        call_type="acompletion",
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        spend=1_000,
        start_time=start,
        end_time=start + timedelta(milliseconds=250),
    )
    return replace(log, **overrides)
