"""`haimaker import-litellm` as users run it: a LiteLLM-shaped PostgreSQL database in, haimaker's store out.

Guards the move from LiteLLM: keys that stop working after the move (token not kept as LiteLLM's SHA-256), spend
lost or rounded on the way (float dollars → nano-dollars), limits dropped silently (a key's linked budget row,
model limits kept in metadata), a second run that duplicates or rewrites rows, and a bad `--from` that ends in a
traceback or echoes the password.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select

from haimaker.money import usd_to_nanos
from haimaker.storage import BudgetRepository, CustomerRepository, create_engine, session_factory
from haimaker.storage.records import Budget, Customer, VirtualKey
from haimaker.storage.tables import VirtualKeyRow
from tests.importer import litellm_db as lite
from tests.support.databases import DatabaseKind, drop_database, make_database_url

pytestmark = pytest.mark.postgres  # the LiteLLM side is always PostgreSQL


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("MASTER_KEY") and k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "haimaker", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean,
        check=False,
    )


async def run_import(config: Path, source: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_cli, "import-litellm", "--from", source, "--config", str(config), *extra)


class Store:
    """haimaker's store after an import, read through the repositories."""

    def __init__(self, url: str, config: Path) -> None:
        self.url = url
        self.config = config

    async def read(self) -> tuple[dict[str, Budget], dict[str, Customer], dict[str, VirtualKey]]:
        engine = create_engine(self.url)
        try:
            sessions = session_factory(engine)
            budgets = {b.budget_id: b for b in await BudgetRepository(sessions).list_all()}
            customers = {c.user_id: c for c in await CustomerRepository(sessions).list_all()}
            async with sessions() as session:
                keys = {row.token: row.to_record() for row in await session.scalars(select(VirtualKeyRow))}
            return budgets, customers, keys
        finally:
            await engine.dispose()


@pytest.fixture
async def litellm(tmp_path: Path) -> AsyncIterator[str]:
    async with lite.litellm_database(tmp_path) as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    kind: DatabaseKind = request.param
    url = await make_database_url(kind, tmp_path)
    config = tmp_path / "config.yaml"
    general = {"master_key": "sk-import-test-master", "database_url": url}
    config.write_text(yaml.safe_dump({"model_list": [], "general_settings": general}))
    try:
        yield Store(url, config)
    finally:
        await drop_database(url)


async def test_import_carries_budgets_customers_and_keys_with_their_spend_in_nanos(litellm: str, store: Store) -> None:
    result = await run_import(store.config, litellm)

    assert result.returncode == 0, result.stderr
    assert f"{lite.BUDGETS + 1} budgets, {lite.END_USERS} end users, {lite.KEYS} keys" in result.stdout
    assert f"budgets: {lite.BUDGETS + 1} new, 0 updated, 0 unchanged" in result.stdout
    assert f"customers: {lite.END_USERS} new, 0 updated, 0 unchanged" in result.stdout
    assert f"keys: {lite.KEYS - 1} new, 0 updated, 0 unchanged" in result.stdout  # the UI session key stays
    assert "restart the proxy" in result.stdout
    budgets, customers, keys = await store.read()
    assert len(budgets) == lite.BUDGETS + 1 and len(customers) == lite.END_USERS and len(keys) == lite.KEYS - 1

    tier = budgets["tier-06"]
    assert tier.max_budget == usd_to_nanos("7.5") and tier.soft_budget == usd_to_nanos("4.5")
    assert (tier.rpm_limit, tier.tpm_limit, tier.max_parallel_requests) == (106, 10_006, None)
    assert tier.budget_duration == "30d"
    assert tier.budget_reset_at == (lite.RESET_AT.replace(hour=6)).replace(tzinfo=UTC)
    assert tier.created_at == lite.CREATED.replace(tzinfo=UTC) and tier.created_by == "admin"

    for i in range(lite.END_USERS):
        customer = customers[f"user-{i:03d}"]
        assert customer.spend == usd_to_nanos(lite.end_user_row(i)["spend"]), i
    customer = customers["user-046"]  # tier-06: a 30d budget, so its spend's period ends at the tier's reset
    assert customer.budget_id == "tier-06" and customer.alias is None
    assert customer.spend == usd_to_nanos(0.123456789 * 46) == 5_679_012_294
    assert customer.spend_reset_at == tier.budget_reset_at
    assert customers["user-045"].alias == "Customer 45" and customers["user-045"].spend_reset_at is None
    assert customers["user-010"].blocked and not customers["user-011"].blocked
    assert customers["user-011"].models == ("gpt-3.5-turbo",)
    assert customers[f"user-{lite.EU_END_USER:03d}"].allowed_model_region == "eu"
    assert customers[f"user-{lite.EU_END_USER:03d}"].default_model == "gpt-3.5-turbo"
    assert customers[f"user-{lite.MARS_END_USER:03d}"].allowed_model_region is None
    assert customers[f"user-{lite.ORPHAN_END_USER:03d}"].budget_id is None

    key = keys[lite.token_of(lite.PLAIN_KEY)]  # the key's own SHA-256: the same key authenticates after the move
    assert key.key_alias == "app-042" and key.key_name == "sk-...0042"
    assert key.spend == usd_to_nanos("0.420000001") == 420_000_001
    assert key.max_budget == usd_to_nanos(52) and key.rpm_limit == 102 and key.tpm_limit == 50_000
    assert key.models == ("gpt-3.5-turbo",) and key.key_type == "default" and not key.blocked
    assert key.customer_id is None and key.expires is None
    assert keys[lite.token_of(1)].key_type == "llm_api"
    assert keys[lite.token_of(lite.MANAGEMENT_KEY)].key_type == "management"
    assert keys[lite.token_of(lite.BLOCKED_KEY)].blocked
    assert keys[lite.token_of(lite.EXPIRED_KEY)].expires == lite.PAST.replace(tzinfo=UTC)
    assert keys[lite.token_of(lite.TEAM_KEY)].team_id == "team-a"
    assert keys[lite.token_of(8)].budget_duration == "1d"
    assert keys[lite.token_of(8)].budget_reset_at == lite.RESET_AT.replace(tzinfo=UTC)
    assert lite.token_of(lite.UI_SESSION_KEY) not in keys

    linked = keys[lite.token_of(lite.BUDGET_LINKED_KEY)]  # its budget row's limits apply to the key itself
    assert linked.soft_budget == usd_to_nanos("7.5") and linked.rpm_limit == 99 and linked.tpm_limit == 50_000
    limited = keys[lite.token_of(lite.MODEL_LIMITS_KEY)]  # LiteLLM keeps model limits in the key's metadata
    assert limited.model_rpm_limit == {"gpt-3.5-turbo": 5} and limited.model_tpm_limit is None
    assert limited.metadata == {"note": "x"}


async def test_a_second_run_changes_nothing_and_says_so(litellm: str, store: Store) -> None:
    first = await run_import(store.config, litellm)
    assert first.returncode == 0, first.stderr
    before = await store.read()

    second = await run_import(store.config, litellm)

    assert second.returncode == 0, second.stderr
    assert f"budgets: 0 new, 0 updated, {lite.BUDGETS + 1} unchanged" in second.stdout
    assert f"customers: 0 new, 0 updated, {lite.END_USERS} unchanged" in second.stdout
    assert f"keys: 0 new, 0 updated, {lite.KEYS - 1} unchanged" in second.stdout
    assert "nothing changed" in second.stdout and "restart the proxy" not in second.stdout
    assert await store.read() == before


async def test_a_rerun_brings_changed_rows_up_to_date_and_keeps_what_only_haimaker_has(
    litellm: str, store: Store
) -> None:
    assert (await run_import(store.config, litellm)).returncode == 0
    engine = create_engine(store.url)
    try:
        async with session_factory(engine).begin() as session:  # an admin bound a key to a customer in haimaker
            row = await session.get(VirtualKeyRow, lite.token_of(lite.PLAIN_KEY))
            assert row is not None
            row.customer_id = "user-042"
    finally:
        await engine.dispose()
    await lite.execute(litellm, """UPDATE "LiteLLM_EndUserTable" SET spend = 9.5 WHERE user_id = 'user-003'""")
    await lite.execute(litellm, """UPDATE "LiteLLM_VerificationToken" SET spend = 1.25 WHERE key_alias = 'app-042'""")

    result = await run_import(store.config, litellm)

    assert result.returncode == 0, result.stderr
    assert f"customers: 0 new, 1 updated, {lite.END_USERS - 1} unchanged" in result.stdout
    assert f"keys: 0 new, 1 updated, {lite.KEYS - 2} unchanged" in result.stdout
    _, customers, keys = await store.read()
    assert customers["user-003"].spend == usd_to_nanos("9.5")
    key = keys[lite.token_of(lite.PLAIN_KEY)]
    assert key.spend == usd_to_nanos("1.25") and key.customer_id == "user-042"


async def test_the_report_names_what_it_could_not_map(litellm: str, store: Store) -> None:
    result = await run_import(store.config, litellm)

    assert result.returncode == 0, result.stderr
    out = result.stdout
    not_imported, _, caveats = out.partition("imported, but not mapped exactly:")
    assert "not imported:" in not_imported and "1 key: a LiteLLM admin UI session key: 'app-005'" in not_imported
    expected = [
        "1 key: expired in LiteLLM: imported, and refused until its expiry is changed: 'app-000'",
        "1 key: owned by a team: teams are not modelled, the team's limits do not apply: 'app-001'",
        "1 key: owned by a user: users are not modelled, the user's limits do not apply: 'app-002'",
        "1 customer: its budget_id names no budget in LiteLLM: imported without a budget: user-199",
        "1 customer: allowed_model_region 'mars' is not one of eu, us: left out: user-008",
        "1 key: this key_alias names 2 keys: 'app-008'",
        "1 budget: temporary budget increase (temp_budget_increase) is not applied: tier-05",
    ]
    for line in expected:
        assert line in caveats, (line, out)
    assert lite.token_of(lite.PLAIN_KEY) not in out and lite.plaintext_key(lite.PLAIN_KEY) not in out


async def test_a_dry_run_reports_and_writes_nothing(litellm: str, store: Store) -> None:
    result = await run_import(store.config, litellm, "--dry-run")

    assert result.returncode == 0, result.stderr
    assert f"customers: {lite.END_USERS} new" in result.stdout and "dry run: nothing was written" in result.stdout
    budgets, customers, keys = await store.read()
    assert (budgets, customers, keys) == ({}, {}, {})


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("mysql://root:hunter2@db/litellm", "--from must be LiteLLM's DATABASE_URL"),
        ("not a url", "--from must be LiteLLM's DATABASE_URL"),
        ("postgresql://postgres:hunter2@127.0.0.1:1/litellm", "cannot reach the LiteLLM database"),
        ("postgresql://postgres:hunter2@127.0.0.1:5432/haimaker_no_such_db", 'database "haimaker_no_such_db"'),
    ],
)
async def test_a_bad_from_url_is_one_error_line_and_a_non_zero_exit(source: str, message: str, store: Store) -> None:
    result = await run_import(store.config, source)

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "hunter2" not in result.stderr


async def test_a_database_without_litellm_tables_is_named_as_such(tmp_path: Path, store: Store) -> None:
    async with lite.litellm_database(tmp_path, with_rows=False) as empty:
        await lite.execute(empty, 'DROP TABLE "LiteLLM_EndUserTable"')
        result = await run_import(store.config, empty)

    assert result.returncode == 1
    assert "is it LiteLLM's proxy database?" in result.stderr and len(result.stderr.strip().splitlines()) == 1
