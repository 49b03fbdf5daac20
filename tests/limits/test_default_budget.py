"""The default end-user budget at start-up (`limits/default_budget.py`), on the in-process app (issue 12).

Guards a configured `max_end_user_budget_id` that does not exist stopping start-up (the proxy must run to create
it), customers who would ride that missing budget being served unlimited, a config declaration that is not created
or that overwrites a stored budget an admin changed, and a warning that does not say how to fix it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from haimaker.app import HaimakerApp, create_app
from haimaker.clock import FakeClock
from haimaker.config.loader import load_config
from haimaker.errors import ServiceUnavailableError
from haimaker.limits.engine import BudgetEngine, GroupPrice
from haimaker.money import usd_to_nanos
from haimaker.periods import next_reset_function
from haimaker.state.catalog import Catalog
from haimaker.state.memory import MemoryCounterStore
from haimaker.storage.records import Budget, Customer
from tests.limits.engine_model_setup import RecordedResets
from tests.support.proxy import MASTER_KEY, base_config

CHAT = {"model": "gpt-3.5-turbo", "messages": [{"role": "user", "content": "hi"}]}
DECLARED = {"max_budget": 2.5, "soft_budget": 2, "rpm_limit": 3, "tpm_limit": 9000, "budget_duration": "30d"}


def _app(tmp_path: Path, litellm_settings: dict[str, Any]) -> HaimakerApp:
    general = {"database_url": f"sqlite+aiosqlite:///{tmp_path / 'store.db'}"}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(base_config(general_settings=general, litellm_settings=litellm_settings)))
    return create_app(load_config(path))


@asynccontextmanager
async def _serving(
    tmp_path: Path, litellm_settings: dict[str, Any]
) -> AsyncIterator[tuple[HaimakerApp, httpx.AsyncClient]]:
    app = _app(tmp_path, litellm_settings)
    async with app.api.router.lifespan_context(app.api):
        transport = httpx.ASGITransport(app=app)
        headers = {"authorization": f"Bearer {MASTER_KEY}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://test", headers=headers) as client:
            yield app, client


def _catalog(app: HaimakerApp) -> Catalog:
    return app.state.engine.catalog


async def test_a_declared_missing_default_budget_is_created_at_start_up(tmp_path: Path) -> None:
    async with _serving(tmp_path, {"max_end_user_budget_id": "free", "default_end_user_budget": DECLARED}) as (
        app,
        client,
    ):
        budget = _catalog(app).budgets["free"]
        assert (budget.max_budget, budget.soft_budget) == (usd_to_nanos("2.5"), usd_to_nanos(2))
        assert (budget.rpm_limit, budget.tpm_limit, budget.budget_duration) == (3, 9000, "30d")
        assert budget.budget_reset_at is not None and budget.budget_reset_at > datetime.now(UTC)
        info = await client.post("/budget/info", json={"budgets": ["free"]})
        assert info.status_code == 200, info.text
        assert info.json()[0]["max_budget"] == 2.5
        # Customers without a budget ride it: rpm_limit 3.
        statuses = [
            (await client.post("/v1/chat/completions", json={**CHAT, "user": "c1"})).status_code for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]


async def test_a_stored_default_budget_is_not_overwritten_by_the_declaration(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with _serving(tmp_path, {"max_end_user_budget_id": "free", "default_end_user_budget": DECLARED}) as (_, c):
        updated = await c.post("/budget/update", json={"budget_id": "free", "rpm_limit": 100})
        assert updated.status_code == 200, updated.text

    with caplog.at_level(logging.INFO, logger="haimaker.budgets"):
        async with _serving(tmp_path, {"max_end_user_budget_id": "free", "default_end_user_budget": DECLARED}) as (
            app,
            _,
        ):
            assert _catalog(app).budgets["free"].rpm_limit == 100, "the admin's change stands"

    [record] = [r for r in caplog.records if "differs from litellm_settings.default_end_user_budget" in r.message]
    assert record.levelno == logging.WARNING
    assert "(rpm_limit)" in record.message and "POST /budget/update" in record.message


async def test_an_undeclared_missing_default_budget_starts_with_one_warning_saying_how(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="haimaker.budgets"):
        async with _serving(tmp_path, {"max_end_user_budget_id": "free"}) as (app, _):
            assert "free" not in _catalog(app).budgets

    [warning] = [r.message for r in caplog.records if r.name == "haimaker.budgets"]
    assert "'free' (litellm_settings.max_end_user_budget_id) does not exist" in warning
    assert 'curl -X POST <proxy>/budget/new -H "x-litellm-api-key: $LITELLM_MASTER_KEY"' in warning
    assert '"budget_id": "free"' in warning
    assert "litellm_settings.default_end_user_budget" in warning


async def test_customers_riding_a_missing_default_budget_get_503_until_it_is_created(tmp_path: Path) -> None:
    async with _serving(tmp_path, {"max_end_user_budget_id": "free"}) as (app, client):
        refused = await client.post("/v1/chat/completions", json={**CHAT, "user": "new-customer"})
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["type"] == "service_unavailable" and error["code"] == "503"
        assert "'free'" in error["message"] and "/budget/new" in error["message"]
        assert "new-customer" not in _catalog(app).customers, "a refused customer is not created"

        # A customer with a budget of its own does not ride the default: served.
        tier = await client.post("/budget/new", json={"budget_id": "paid", "max_budget": 5})
        assert tier.status_code == 200, tier.text
        own = await client.post("/customer/new", json={"user_id": "paying", "budget_id": "paid"})
        assert own.status_code == 200, own.text
        assert (await client.post("/v1/chat/completions", json={**CHAT, "user": "paying"})).status_code == 200
        # A known customer without a budget rides the default: refused too.
        bare = await client.post("/customer/new", json={"user_id": "bare"})
        assert bare.status_code == 200, bare.text
        assert (await client.post("/v1/chat/completions", json={**CHAT, "user": "bare"})).status_code == 503
        # No customer at all: no budget applies, as before.
        assert (await client.post("/v1/chat/completions", json=CHAT)).status_code == 200

        created = await client.post("/budget/new", json={"budget_id": "free", "rpm_limit": 10})
        assert created.status_code == 200, created.text
        for user in ("new-customer", "bare"):
            served = await client.post("/v1/chat/completions", json={**CHAT, "user": user})
            assert served.status_code == 200, served.text


def test_a_new_customer_with_its_keys_budget_does_not_ride_the_missing_default() -> None:
    # `check_access(new_customer_budget_id=...)`: a customer first seen through a key with `end_user_budget_id`
    # gets that budget, not the default; only a budget that exists counts.
    clock = FakeClock(datetime(2026, 1, 15, tzinfo=UTC))
    next_reset = next_reset_function("UTC", "00:00")
    catalog = Catalog(default_budget_id="free")
    catalog.load([Customer(user_id="bare")], [Budget(budget_id="key-tier")])
    store = MemoryCounterStore(clock, next_reset, RecordedResets(), budget_status_code=400)
    engine = BudgetEngine(
        catalog,
        store,
        clock,
        fail_closed=False,
        reservation_enabled=True,
        block_unpriced=False,
        default_max_output_tokens=256,
    )
    group = GroupPrice(None, None)

    engine.check_access("someone", "m", group, new_customer_budget_id="key-tier")
    for customer_id, budget_id in (("someone", None), ("someone", "no-such"), ("bare", "key-tier")):
        with pytest.raises(ServiceUnavailableError, match="does not exist"):
            engine.check_access(customer_id, "m", group, new_customer_budget_id=budget_id)


async def test_a_default_budget_another_instance_created_meanwhile_is_taken_as_it_is(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Two instances start together: the one whose insert loses reads the winner's row instead of failing."""
    from haimaker.config.schema import LiteLLMSettings
    from haimaker.limits.default_budget import ensure_default_budget
    from haimaker.storage.budgets_repo import BudgetRepository
    from haimaker.storage.engine import create_engine, session_factory, upgrade

    url = f"sqlite+aiosqlite:///{tmp_path / 'race.db'}"
    await upgrade(url)
    engine = create_engine(url)
    try:
        repo = BudgetRepository(session_factory(engine))
        winner = await repo.create(Budget(budget_id="free", rpm_limit=7))  # the other instance's row
        catalog = Catalog(default_budget_id="free")  # loaded before the other instance wrote it
        settings = LiteLLMSettings.model_validate(
            {"max_end_user_budget_id": "free", "default_end_user_budget": DECLARED}
        )
        with caplog.at_level(logging.INFO, logger="haimaker.budgets"):
            await ensure_default_budget(
                settings, repo, catalog, datetime(2026, 1, 1, tzinfo=UTC), next_reset_function("UTC", "00:00")
            )
    finally:
        await engine.dispose()

    assert catalog.budgets["free"] == winner  # theirs, not the declaration (rpm 3)
    assert any("created by another instance at the same time" in r.message for r in caplog.records)


async def test_a_stored_default_budget_equal_to_the_declaration_is_said_to_match(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"max_end_user_budget_id": "free", "default_end_user_budget": DECLARED}
    async with _serving(tmp_path, settings):
        pass
    with caplog.at_level(logging.INFO, logger="haimaker.budgets"):
        async with _serving(tmp_path, settings):
            pass
    assert any("exists in the store as the config declares it" in r.message for r in caplog.records)
    assert not any("differs from" in r.message for r in caplog.records)
