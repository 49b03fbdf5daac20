"""`haimaker import-litellm`: a LiteLLM proxy's budgets, end users and virtual keys, with their spend, into our store.

LiteLLM → haimaker:
- `LiteLLM_BudgetTable` → `budgets` (dollars → nano-dollars; `allowed_models` and `temp_budget_*` are not modelled).
- `LiteLLM_EndUserTable` → `customers` (`spend` is the current period's; its period ends at the budget's
  `budget_reset_at`, which is when LiteLLM's reset job would zero it).
- `LiteLLM_VerificationToken` → `virtual_keys`. LiteLLM's `token` is the SHA-256 hex of the key, which is ours too,
  so every imported key keeps working. A key's `budget_id` row (where LiteLLM keeps a key's `soft_budget`) is folded
  into the key's own limits: the key's own column wins where both are set. `metadata.model_rpm_limit`,
  `metadata.model_tpm_limit` and `metadata.end_user_budget_id` (where LiteLLM keeps them) become the key's fields.

Invariants:
- Nothing is dropped silently: a row or field that cannot be carried over exactly is named in the report with the
  reason (skipped rows, ignored fields, ownership by teams and users that haimaker does not model, keys already
  expired, which are still imported).
- Idempotent (see `storage/import_writer.py`): a second run of the same import writes nothing and says so.
- The import is meant for a stopped proxy: a running one loads budgets, customers and keys at startup only.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from haimaker.errors import BadRequestError
from haimaker.identity import hash_token
from haimaker.ids import MAX_TEXT_CHARS, text_problem
from haimaker.importer.source import LiteLLMSnapshot, Row, describe, read_snapshot, source_url
from haimaker.money import Nanos, usd_to_nanos
from haimaker.periods import validate_duration
from haimaker.storage.engine import create_engine, session_factory
from haimaker.storage.import_writer import ImportWriteResult, write_import
from haimaker.storage.records import KEY_TYPES, Budget, Customer, VirtualKey

# Keys LiteLLM's admin UI mints for its own login sessions: not an app's keys.
UI_SESSION_TEAM: Final = "litellm-dashboard"
REGIONS: Final = ("eu", "us")
_HEX_TOKEN: Final = re.compile(r"[0-9a-f]{64}")
# Key metadata LiteLLM enforces that haimaker does not (the two model limits it lifts into fields are not here).
_UNENFORCED_KEY_METADATA: Final = (
    "model_itpm_limit",
    "model_otpm_limit",
    "mcp_rpm_limit",
    "tag_rpm_limit",
    "rpm_limit_type",
    "tpm_limit_type",
    "enforced_params",
    "guardrails",
    "policies",
    "temp_budget_increase",
    "temp_budget_expiry",
)
# Key columns for features haimaker does not model, with what they are; reported when set.
_UNMODELLED_KEY_COLUMNS: Final = {
    "organization_id": "organization",
    "project_id": "project",
    "agent_id": "agent",
    "object_permission_id": "object permissions (MCP servers, vector stores)",
    "aliases": "model aliases",
    "config": "per-key config",
    "permissions": "permissions",
    "allowed_cache_controls": "allowed cache controls",
    "policies": "policies",
    "access_group_ids": "access groups",
    "budget_fallbacks": "budget fallbacks",
    "budget_limits": "per-model budget limits",
    "router_settings": "router settings",
    "auto_rotate": "auto rotation",
    "tpd_limit": "tokens per day limit",
}
# The key's own limit columns a linked budget row fills when the key leaves them empty.
_KEY_LIMITS_FROM_BUDGET: Final = (
    "max_budget",
    "soft_budget",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "model_max_budget",
    "budget_duration",
    "budget_reset_at",
)


@dataclass(frozen=True, slots=True)
class Note:
    """One thing the import could not carry over exactly: `kind` is budget, customer or key; `name` names the row."""

    kind: str
    name: str
    reason: str
    skipped: bool = False


@dataclass(slots=True)
class MappedImport:
    """LiteLLM's rows as our records, and what could not be mapped exactly."""

    budgets: list[Budget] = field(default_factory=list)
    customers: list[Customer] = field(default_factory=list)
    keys: list[VirtualKey] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What was read, written, and not mapped."""

    source: str
    read_counts: tuple[int, int, int]
    written: ImportWriteResult
    notes: list[Note]
    dry_run: bool = False

    def lines(self, *, examples: int = 20) -> list[str]:
        """The report as printed by the CLI: counts per kind, then notes grouped by reason."""
        budgets, end_users, keys = self.read_counts
        out = [f"read from {self.source}: {budgets} budgets, {end_users} end users, {keys} keys"]
        for label, counts in (
            ("budgets", self.written.budgets),
            ("customers", self.written.customers),
            ("keys", self.written.keys),
        ):
            out.append(f"  {label}: {counts.inserted} new, {counts.updated} updated, {counts.unchanged} unchanged")
        for title, skipped in (("not imported", True), ("imported, but not mapped exactly", False)):
            groups: dict[tuple[str, str], list[str]] = defaultdict(list)
            for note in self.notes:
                if note.skipped is skipped:
                    groups[note.kind, note.reason].append(note.name)
            if groups:
                out.append(f"{title}:")
            for (kind, reason), names in sorted(groups.items()):
                shown = ", ".join(names[:examples]) + (
                    f" and {len(names) - examples} more" if len(names) > examples else ""
                )
                out.append(f"  {len(names)} {kind}{'s' if len(names) != 1 else ''}: {reason}: {shown}")
        if self.dry_run:
            out.append("dry run: nothing was written")
        elif self.written.is_unchanged:
            out.append("nothing changed: the store already holds this import")
        else:
            out.append("done: restart the proxy (it loads budgets, customers and keys at startup)")
        return out


async def import_litellm(from_url: str, store_url: str, *, now: datetime, dry_run: bool = False) -> ImportReport:
    """Read the LiteLLM database at `from_url` and write it into the (migrated) store at `store_url`.

    Raises:
        LiteLLMSourceError: the LiteLLM database cannot be read.
    """
    url = source_url(from_url)
    snapshot = await read_snapshot(url)
    mapped = map_snapshot(snapshot, now=now)
    engine = create_engine(store_url)
    try:
        written = await write_import(
            session_factory(engine),
            budgets=mapped.budgets,
            customers=mapped.customers,
            keys=mapped.keys,
            now=now,
            dry_run=dry_run,
        )
    finally:
        await engine.dispose()
    counts = (len(snapshot.budgets), len(snapshot.end_users), len(snapshot.keys))
    return ImportReport(source=describe(url), read_counts=counts, written=written, notes=mapped.notes, dry_run=dry_run)


def map_snapshot(snapshot: LiteLLMSnapshot, *, now: datetime) -> MappedImport:
    """LiteLLM's rows as our records; `now` decides which keys are already expired."""
    mapped = MappedImport()
    budgets: dict[str, Budget] = {}
    for row in snapshot.budgets:
        budget = _map_budget(row, mapped.notes)
        if budget is not None:
            budgets[budget.budget_id] = budget
    mapped.budgets = list(budgets.values())
    for row in snapshot.end_users:
        customer = _map_customer(row, budgets, mapped.notes)
        if customer is not None:
            mapped.customers.append(customer)
    tokens: set[str] = set()
    for row in snapshot.keys:
        key = _map_key(row, budgets, now, mapped.notes)
        if key is None:
            continue
        if key.token in tokens:
            mapped.notes.append(Note("key", _key_name(row), "stored twice in LiteLLM (plaintext and hashed)", True))
            continue
        tokens.add(key.token)
        mapped.keys.append(key)
    holders = Counter(key.key_alias for key in mapped.keys if key.key_alias is not None)
    for alias in sorted(alias for alias, count in holders.items() if count > 1):
        # LiteLLM's API refuses a shared alias but its table does not; ours keeps them too (`/key/info` by alias
        # then finds several), and `/key/update` refuses to give an alias to a second key.
        mapped.notes.append(Note("key", repr(alias[:60]), f"this key_alias names {holders[alias]} keys"))
    return mapped


def _map_budget(row: Row, notes: list[Note]) -> Budget | None:
    budget_id = str(row["budget_id"])
    problem = text_problem(budget_id)
    if problem is not None:
        notes.append(Note("budget", repr(budget_id[:40]), f"the id {problem}", skipped=True))
        return None
    for column, what in (
        ("temp_budget_increase", "temporary budget increase"),
        ("allowed_models", "per-member allowed models"),
    ):
        if row.get(column):
            notes.append(Note("budget", budget_id, f"{what} ({column}) is not applied"))
    return Budget(
        budget_id=budget_id,
        max_budget=_nanos(row.get("max_budget")),
        soft_budget=_nanos(row.get("soft_budget")),
        max_parallel_requests=row.get("max_parallel_requests"),
        tpm_limit=row.get("tpm_limit"),
        rpm_limit=row.get("rpm_limit"),
        tpd_limit=row.get("tpd_limit"),
        model_max_budget=_json_object(row.get("model_max_budget")) or None,
        budget_duration=_duration(row.get("budget_duration"), "budget", budget_id, notes),
        budget_reset_at=_utc(row.get("budget_reset_at")),
        created_at=_utc(row.get("created_at")),
        created_by=row.get("created_by") or "default_user_id",
        updated_at=_utc(row.get("updated_at")),
        updated_by=row.get("updated_by") or "default_user_id",
    )


def _map_customer(row: Row, budgets: dict[str, Budget], notes: list[Note]) -> Customer | None:
    user_id = str(row["user_id"])
    problem = text_problem(user_id)
    if problem is not None:
        notes.append(Note("customer", repr(user_id[:40]), f"the id {problem}", skipped=True))
        return None
    alias = row.get("alias")
    if alias is not None and text_problem(alias, MAX_TEXT_CHARS) is not None:
        notes.append(Note("customer", user_id, f"the alias {text_problem(alias, MAX_TEXT_CHARS)}: left out"))
        alias = None
    region = row.get("allowed_model_region")
    if region is not None and region not in REGIONS:
        notes.append(Note("customer", user_id, f"allowed_model_region {region!r} is not one of eu, us: left out"))
        region = None
    budget_id = row.get("budget_id")
    budget = budgets.get(budget_id) if budget_id is not None else None
    if budget_id is not None and budget is None:
        notes.append(Note("customer", user_id, "its budget_id names no budget in LiteLLM: imported without a budget"))
        budget_id = None
    if row.get("object_permission_id"):
        notes.append(Note("customer", user_id, "object permissions (object_permission_id) are not modelled"))
    has_period = budget is not None and budget.budget_duration is not None
    return Customer(
        user_id=user_id,
        alias=alias,
        spend=_nanos(row.get("spend")) or 0,
        blocked=bool(row.get("blocked")),
        allowed_model_region=region,
        default_model=row.get("default_model"),
        models=tuple(row.get("models") or ()),
        budget_id=budget_id,
        spend_reset_at=budget.budget_reset_at if has_period and budget is not None else None,
    )


def _map_key(row: Row, budgets: dict[str, Budget], now: datetime, notes: list[Note]) -> VirtualKey | None:
    name = _key_name(row)
    if row.get("team_id") == UI_SESSION_TEAM:
        notes.append(Note("key", name, "a LiteLLM admin UI session key", skipped=True))
        return None
    token = _token(str(row["token"]), name, notes)
    if token is None:
        return None
    alias = row.get("key_alias")
    if alias is not None and text_problem(alias) is not None:
        notes.append(Note("key", name, f"the key_alias {text_problem(alias)}: left out"))
        alias = None
    metadata = _json_object(row.get("metadata"))
    limits = _own_limits(row, name, notes)
    _fold_budget(limits, row.get("budget_id"), budgets, name, notes)
    expires = _utc(row.get("expires"))
    if expires is not None and expires <= now:
        notes.append(Note("key", name, "expired in LiteLLM: imported, and refused until its expiry is changed"))
    _note_unmodelled(row, metadata, name, notes)
    if any(model.startswith(("all-team-models", "all-org-models")) for model in row.get("models") or ()):
        notes.append(Note("key", name, "its models name its team's or organization's models, which are not known"))
    key_type = row.get("key_type") or "default"
    if key_type not in KEY_TYPES:
        notes.append(
            Note("key", name, f"key_type {key_type!r} is not one of {', '.join(KEY_TYPES)}: imported as default")
        )
        key_type = "default"
    return VirtualKey(
        token=token,
        key_name=row.get("key_name") or "sk-...",
        key_alias=alias,
        expires=expires,
        models=tuple(row.get("models") or ()),
        spend=_nanos(row.get("spend")) or 0,
        metadata=metadata,
        blocked=bool(row.get("blocked")),
        key_type=key_type,
        allowed_routes=tuple(row.get("allowed_routes") or ()),
        model_rpm_limit=_model_limits(metadata.pop("model_rpm_limit", None), "model_rpm_limit", name, notes),
        model_tpm_limit=_model_limits(metadata.pop("model_tpm_limit", None), "model_tpm_limit", name, notes),
        end_user_budget_id=_end_user_budget(metadata.pop("end_user_budget_id", None), budgets, name, notes),
        user_id=row.get("user_id"),
        team_id=row.get("team_id"),
        created_at=_utc(row.get("created_at")),
        created_by=row.get("created_by") or "default_user_id",
        updated_at=_utc(row.get("updated_at")),
        updated_by=row.get("updated_by") or "default_user_id",
        **limits,
    )


def _token(token: str, name: str, notes: list[Note]) -> str | None:
    if _HEX_TOKEN.fullmatch(token):
        return token
    if token.startswith("sk-"):
        # A key stored before LiteLLM hashed keys: hashed as every key is (LiteLLM's `hash_token`).
        notes.append(Note("key", name, "stored in plaintext in LiteLLM: imported as its SHA-256 hash"))
        return hash_token(token)
    notes.append(Note("key", name, "its token is neither a SHA-256 hex digest nor an sk- key", skipped=True))
    return None


def _own_limits(row: Row, name: str, notes: list[Note]) -> dict[str, Any]:
    return {
        "max_budget": _nanos(row.get("max_budget")),
        "soft_budget": None,  # LiteLLM keeps a key's soft budget on its budget row
        "rpm_limit": row.get("rpm_limit"),
        "tpm_limit": row.get("tpm_limit"),
        "max_parallel_requests": row.get("max_parallel_requests"),
        "model_max_budget": _json_object(row.get("model_max_budget")) or None,
        "budget_duration": _duration(row.get("budget_duration"), "key", name, notes),
        "budget_reset_at": _utc(row.get("budget_reset_at")),
    }


def _fold_budget(
    limits: dict[str, Any], budget_id: str | None, budgets: dict[str, Budget], name: str, notes: list[Note]
) -> None:
    """Fill the key's empty limits from its linked budget row; the key's own value wins a conflict (said)."""
    if budget_id is None:
        return
    budget = budgets.get(budget_id)
    if budget is None:
        notes.append(Note("key", name, f"its budget_id {budget_id!r} names no budget in LiteLLM: left out"))
        return
    for column in _KEY_LIMITS_FROM_BUDGET:
        value = getattr(budget, column)
        if value is None:
            continue
        if limits[column] is None:
            limits[column] = value
        elif limits[column] != value:
            notes.append(Note("key", name, f"{column} differs on the key and its budget row: the key's own kept"))
    if budget.tpd_limit is not None:
        notes.append(Note("key", name, "its budget row's tpd_limit is not applied to keys"))


def _note_unmodelled(row: Row, metadata: dict[str, Any], name: str, notes: list[Note]) -> None:
    if row.get("team_id"):
        notes.append(Note("key", name, "owned by a team: teams are not modelled, the team's limits do not apply"))
    if row.get("user_id"):
        notes.append(Note("key", name, "owned by a user: users are not modelled, the user's limits do not apply"))
    for column, what in _UNMODELLED_KEY_COLUMNS.items():
        if row.get(column):
            notes.append(Note("key", name, f"{what} ({column}) not modelled"))
    for entry in _UNENFORCED_KEY_METADATA:
        if metadata.get(entry):
            notes.append(Note("key", name, f"metadata.{entry} is kept in metadata but not enforced"))


def _model_limits(value: Any, what: str, name: str, notes: list[Note]) -> dict[str, int] | None:
    if not value:
        return None
    if isinstance(value, dict) and all(isinstance(v, int) and not isinstance(v, bool) for v in value.values()):
        return {str(model): int(limit) for model, limit in value.items()}
    notes.append(Note("key", name, f"metadata.{what} is not a map of model to integer: left out"))
    return None


def _end_user_budget(value: Any, budgets: dict[str, Budget], name: str, notes: list[Note]) -> str | None:
    if not value:
        return None
    if isinstance(value, str) and value in budgets:
        return value
    notes.append(Note("key", name, "metadata.end_user_budget_id names no budget in LiteLLM: left out"))
    return None


def _duration(value: str | None, kind: str, name: str, notes: list[Note]) -> str | None:
    if value is None:
        return None
    try:
        return validate_duration(value)
    except BadRequestError:
        notes.append(Note(kind, name, f"budget_duration {value!r} is not a duration haimaker reads: left out"))
        return None


def _key_name(row: Row) -> str:
    """How a key is named in the report: its alias, else LiteLLM's masked name; never the token."""
    alias = row.get("key_alias")
    if alias:
        return repr(str(alias)[:60])
    return str(row.get("key_name") or "sk-...")


def _nanos(dollars: float | int | None) -> Nanos | None:
    # Prisma's Float is a double: NaN and infinities can be stored, and no amount of money is either.
    return None if dollars is None or not math.isfinite(dollars) else usd_to_nanos(dollars)


def _utc(value: datetime | None) -> datetime | None:
    """Prisma's `timestamp(3)` columns hold UTC without a zone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json_object(value: Any) -> dict[str, Any]:
    if isinstance(value, str | bytes):
        value = orjson.loads(value)
    return dict(value) if isinstance(value, dict) else {}
