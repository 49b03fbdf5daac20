"""Virtual keys: the admin use-cases behind `/key/*` and the admin UI's Keys page, LiteLLM's rules and messages.

Fields arrive as the wire carries them, as a mapping holding only the fields the caller sent (on update a field
sent as null is applied, a field left out is untouched). A key is named by its plaintext (`sk-...`) or by its token
(the SHA-256 hex), as LiteLLM accepts both: a value starting with `sk-` is hashed, anything else is taken as a token.

Invariants:
- The plaintext of a key exists only in `generate` and `regenerate`, which return it once; it is never stored, and
  nothing else here returns it (`identity.hash_token` is the one way from a key to its token).
- Every read and write first waits for the spend recorder (`Services.settle_pending`): the stored spend is exact, and
  a regenerated key takes over every charge made under its old token.
- Every write reaches the hot state before it returns: `Services.key_changed` puts the key into the in-memory
  `KeyCatalog` (or drops it, forgetting its counters) and announces it; a spend an admin set is seeded into the
  counters (`Services.key_spend_changed`).
- Money arrives in USD and is stored in nano-dollars; `budget_duration` sets `budget_reset_at` as budgets do.
"""

from __future__ import annotations

import builtins
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final

from haimaker import identity
from haimaker.errors import BadRequestError, NotFoundError, ProxyError
from haimaker.ids import MAX_TEXT_CHARS, checked_text
from haimaker.periods import parse_duration
from haimaker.services.budgets import usd_amount
from haimaker.storage.records import KEY_TYPES, VirtualKey

if TYPE_CHECKING:
    from haimaker.services.container import Services
    from haimaker.storage.keys_repo import KeyRepository

# LiteLLM: `secrets.token_urlsafe(16)` after "sk-" (22 characters), and a caller's key of at least 16 characters.
GENERATED_KEY_BYTES: Final = 16
MIN_CUSTOM_KEY_CHARS: Final = 16
# LiteLLM's `/key/list` page size bounds.
MAX_LIST_SIZE: Final = 100
# LiteLLM's `key_type` presets: the route groups a key of that type may call (`default` has none: full access).
KEY_TYPE_ROUTES: Final = {
    "llm_api": ("llm_api_routes",),
    "management": ("management_routes",),
    "read_only": ("info_routes",),
}
# LiteLLM's `is_valid_api_key` (block/unblock): a plain `sk-` key or a SHA-256 hex token, 3 to 100 characters.
_VALID_KEY: Final = re.compile(r"sk-[A-Za-z0-9_-]+|[a-fA-F0-9]{64}")
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
# Fields copied to the record as given (after the schema's checks).
_PLAIN_FIELDS: Final = (
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "model_rpm_limit",
    "model_tpm_limit",
    "user_id",
    "team_id",
)
_BUDGET_FIELDS: Final = ("max_budget", "soft_budget", "budget_duration", "model_max_budget")


@dataclass(frozen=True, slots=True)
class KeyPage:
    """One page of `/key/list`: the keys (with live spend), the total and the page arithmetic, as LiteLLM counts."""

    keys: list[VirtualKey]
    total_count: int
    current_page: int
    total_pages: int


def token_of(key_or_token: str) -> str:
    """The token a caller means: the hash of an `sk-` key, anything else as given (LiteLLM's hash_token_if_needed)."""
    return identity.hash_token(key_or_token) if key_or_token.startswith("sk-") else key_or_token


def key_status(key: VirtualKey, now: datetime) -> str:
    """LiteLLM's derived status: `revoked` (blocked), `expired`, or `active`."""
    if key.blocked:
        return "revoked"
    return "expired" if key.expires is not None and key.expires < now else "active"


def _key_not_found(param: str = "key") -> NotFoundError:
    return NotFoundError("Key not found.", param=param)


class KeyService:
    """Generate, read, update, delete, list, regenerate, block and unblock keys; keeps catalog and counters in step."""

    def __init__(self, services: Services) -> None:
        self._services = services

    @property
    def _repo(self) -> KeyRepository:
        return self._services.keys_repo

    # -- reads ---------------------------------------------------------------------------------------------------

    async def info(self, key_or_token: str) -> VirtualKey:
        """One key, its spend live (charges not yet written included).

        Raises:
            NotFoundError: no such key.
        """
        token = token_of(checked_text(key_or_token, param="key"))
        await self._services.settle_pending()
        key = await self._repo.get(token)
        if key is None:
            raise NotFoundError("Key not found in database", param="key")
        return await self._live(key)

    async def list(
        self, page: int = 1, size: int = 10, key_alias: str | None = None, return_full_object: bool = False
    ) -> KeyPage:
        """A page of keys, newest first, optionally only those with exactly `key_alias`.

        `return_full_object` only decides how the API renders the page; the keys are records either way.
        """
        if not 1 <= size <= MAX_LIST_SIZE:
            raise BadRequestError(f"size must be from 1 to {MAX_LIST_SIZE}.", param="size")
        if page < 1:
            raise BadRequestError("page must be at least 1.", param="page")
        if key_alias is not None:
            checked_text(key_alias, param="key_alias", max_chars=MAX_TEXT_CHARS)
        await self._services.settle_pending()
        total = await self._repo.count(key_alias)
        keys = await self._repo.list_page(page, size, key_alias)
        live = [await self._live(key) for key in keys] if return_full_object else keys
        return KeyPage(keys=live, total_count=total, current_page=page, total_pages=-(-total // size))

    # -- writes --------------------------------------------------------------------------------------------------

    async def generate(self, fields: Mapping[str, Any]) -> tuple[str, VirtualKey]:
        """Create a key from wire fields; returns the plaintext (shown once) and the stored record.

        Raises:
            BadRequestError: an invalid custom key, amount, duration or alias; an unknown end_user_budget_id; an
                alias or key that exists already.
        """
        custom = fields.get("key")
        plaintext = _checked_new_key(custom, param="key") if custom is not None else _generated_key()
        key_type = fields.get("key_type") or "default"
        changes = _with_key_type(await self._changes(fields), key_type)
        now = self._services.clock.now()
        record = replace(
            VirtualKey(token=identity.hash_token(plaintext), key_name=identity.abbreviate_key(plaintext)),
            created_at=now,
            updated_at=now,
            **changes,
        )
        await self._services.settle_pending()
        created = await self._repo.create(record)
        self._services.key_changed(created.token, created)
        self._services.key_spend_changed(created)
        return plaintext, created

    async def check(self, fields: Mapping[str, Any]) -> None:
        """Validate wire fields as `generate` and `update` do, writing nothing (the admin UI checks a whole form).

        Raises:
            BadRequestError: the first invalid field.
        """
        await self._changes(fields)

    async def update(self, fields: Mapping[str, Any]) -> VirtualKey:
        """Apply the fields present to the key named by `key` (plaintext or token), else by `key_alias`.

        `duration` sets a new expiry counted from now (`null` or "-1": never expires); `spend` sets the spend.

        Raises:
            BadRequestError: neither key nor key_alias, an alias shared by several keys, an invalid field.
            NotFoundError: no such key.
        """
        await self._services.settle_pending()
        current = await self._resolve(fields.get("key"), fields.get("key_alias"))
        changes = await self._changes({k: v for k, v in fields.items() if k != "key"})
        if "key_type" in fields:
            changes = _with_key_type(changes, fields["key_type"] or "default")
        updated = await self._repo.update(current.token, changes)
        if updated is None:  # deleted meanwhile
            raise _key_not_found()
        self._services.key_changed(updated.token, updated)
        if "spend" in changes:
            self._services.key_spend_changed(updated)
        elif "budget_reset_at" in changes:
            # A new budget period: the counters keep the spend counted so far and reset on the new instant.
            spend = await self._services.live_key_spend(current)
            self._services.key_spend_changed(replace(updated, spend=spend))
        return await self._live(updated)

    async def delete(
        self, keys: Iterable[str] | None = None, key_aliases: Iterable[str] | None = None
    ) -> builtins.list[str]:
        """Delete keys named by key (plaintext or token), or else by alias, all or none; returns what was named
        (tokens for keys, so a plaintext never comes back; aliases as given). Their spend logs stay.

        Raises:
            BadRequestError: neither keys nor key_aliases.
            NotFoundError: some keys or aliases do not exist (nothing is deleted).
        """
        named_keys = [token_of(checked_text(k, param="keys")) for k in dict.fromkeys(keys or ())]
        # LiteLLM: `keys` wins when both are sent.
        aliases = [] if named_keys else list(dict.fromkeys(key_aliases or ()))
        for alias in aliases:
            checked_text(alias, param="key_aliases", max_chars=MAX_TEXT_CHARS)
        if not named_keys and not aliases:
            raise BadRequestError("At least one of 'keys' or 'key_aliases' must be provided.", param="keys")
        await self._services.settle_pending()
        tokens = list(named_keys)
        missing: list[str] = []
        for alias in aliases:
            held = await self._repo.get_by_alias(alias)
            if not held:
                missing.append(alias)
            tokens.extend(key.token for key in held)
        if missing:
            raise NotFoundError(f"Key alias(es) not found: {', '.join(missing)}", param="key_aliases")
        await self._repo.delete_many(tokens)
        for token in dict.fromkeys(tokens):
            self._services.key_changed(token, None)
        return named_keys if named_keys else aliases

    async def regenerate(self, key: str | None, fields: Mapping[str, Any]) -> tuple[str, VirtualKey]:
        """Give a key a new value (random, or `new_key`), keeping its row, spend and settings; the fields present
        change as on update. Returns the new plaintext (shown once) and the record. The old value stops working.

        Raises:
            BadRequestError: no key named, an invalid new_key or field, or a new_key in use.
            NotFoundError: no such key.
        """
        named = fields.get("key") or key
        if not named:
            raise BadRequestError("No key passed in.", param="key")
        new_key = fields.get("new_key")
        plaintext = _checked_new_key(new_key, param="new_key", regenerate=True) if new_key else _generated_key()
        await self._services.settle_pending()
        current = await self._resolve(named, None)
        updatable = {k: v for k, v in fields.items() if k not in ("key", "new_key")}
        changes = await self._changes(updatable)
        if "key_type" in fields:
            changes = _with_key_type(changes, fields["key_type"] or "default")
        spend = await self._services.live_key_spend(current)
        fresh = replace(
            current,
            token=identity.hash_token(plaintext),
            key_name=identity.abbreviate_key(plaintext),
            **changes,
        )
        replaced = await self._repo.replace_token(current.token, fresh)
        if replaced is None:  # deleted meanwhile
            raise _key_not_found()
        self._services.key_changed(current.token, None)
        self._services.key_changed(replaced.token, replaced)
        # The spend moves with the row: seeded under the new token unless the caller set a new one.
        self._services.key_spend_changed(replaced if "spend" in changes else replace(replaced, spend=spend))
        return plaintext, await self._live(replaced)

    async def block(self, key: str) -> VirtualKey:
        """Refuse every request made with the key (LiteLLM: 401, the key is revoked) until unblocked."""
        return await self._set_blocked(key, True)

    async def unblock(self, key: str) -> VirtualKey:
        return await self._set_blocked(key, False)

    # -- helpers -------------------------------------------------------------------------------------------------

    async def _set_blocked(self, key: str, blocked: bool) -> VirtualKey:
        if not (3 <= len(key) <= 100 and _VALID_KEY.fullmatch(key)):
            raise BadRequestError("Invalid key format.", param="key")
        await self._services.settle_pending()
        updated = await self._repo.set_blocked(token_of(key), blocked)
        if updated is None:
            raise _key_not_found()
        self._services.key_changed(updated.token, updated)
        return await self._live(updated)

    async def _resolve(self, key: str | None, key_alias: str | None) -> VirtualKey:
        """The key named by plaintext/token, else by alias (LiteLLM's `_get_and_validate_existing_key`)."""
        if key is not None:
            found = await self._repo.get(token_of(checked_text(key, param="key")))
            if found is None:
                raise _key_not_found()
            return found
        if key_alias is None:
            raise BadRequestError("either key or key_alias must be provided", param="key")
        held = await self._repo.get_by_alias(checked_text(key_alias, param="key_alias", max_chars=MAX_TEXT_CHARS))
        if not held:
            raise NotFoundError(f"Key not found. No key with key_alias='{key_alias}'.", param="key_alias")
        if len(held) > 1:
            raise BadRequestError(
                f"Multiple keys share key_alias='{key_alias}', so it cannot be used as an identifier.",
                param="key_alias",
            )
        return held[0]

    async def _changes(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Record changes from the wire fields present (validated; money in nanos, durations to instants)."""
        changes: dict[str, Any] = {}
        now = self._services.clock.now()
        if "key_alias" in fields:  # on update by alias, the same alias again: the store sees no conflict
            changes["key_alias"] = _checked_alias(fields["key_alias"])
        if "duration" in fields:
            changes["expires"] = _expiry(fields["duration"], now)
        budget = self._services.budgets.changes({name: fields[name] for name in _BUDGET_FIELDS if name in fields})
        changes.update({name: value for name, value in budget.items() if name != "budget_reset_at"})
        if "budget_duration" in budget:
            changes["budget_reset_at"] = budget.get("budget_reset_at")
        if fields.get("spend") is not None:
            changes["spend"] = usd_amount("spend", fields["spend"])
        for name in _PLAIN_FIELDS:
            if name in fields:
                changes[name] = fields[name]
        if "models" in fields:
            changes["models"] = tuple(fields["models"] or ())
        if "allowed_routes" in fields:
            changes["allowed_routes"] = tuple(fields["allowed_routes"] or ())
        if "metadata" in fields:
            changes["metadata"] = dict(fields["metadata"] or {})
        if fields.get("blocked") is not None:
            changes["blocked"] = bool(fields["blocked"])
        if "customer_id" in fields:
            customer_id = fields["customer_id"]
            changes["customer_id"] = checked_text(customer_id, param="customer_id") if customer_id else None
        if "end_user_budget_id" in fields:
            changes["end_user_budget_id"] = await self._checked_end_user_budget(fields["end_user_budget_id"])
        return changes

    async def _checked_end_user_budget(self, budget_id: str | None) -> str | None:
        """LiteLLM: a non-empty value must name a budget; empty (or null) clears it."""
        if not budget_id:
            return None
        checked_text(budget_id, param="end_user_budget_id")
        if await self._services.budgets_repo.get(budget_id) is None:
            raise BadRequestError(
                f"end_user_budget_id={budget_id} does not match any budget.", param="end_user_budget_id"
            )
        return budget_id

    async def _live(self, key: VirtualKey) -> VirtualKey:
        return replace(key, spend=await self._services.live_key_spend(key))


def _with_key_type(changes: dict[str, Any], key_type: str) -> dict[str, Any]:
    """LiteLLM's `handle_key_type`: a typed key's routes are its type's preset, whatever else was sent."""
    if key_type not in KEY_TYPES:
        raise BadRequestError(f"Invalid key_type '{key_type}'. Use one of {', '.join(KEY_TYPES)}.", param="key_type")
    preset = KEY_TYPE_ROUTES.get(key_type)
    return {**changes, "key_type": key_type, **({"allowed_routes": preset} if preset is not None else {})}


def _generated_key() -> str:
    return f"sk-{secrets.token_urlsafe(GENERATED_KEY_BYTES)}"


def _checked_new_key(value: str, *, param: str, regenerate: bool = False) -> str:
    """A caller-chosen key value, with LiteLLM's rules and messages (`/key/generate` and `/key/regenerate` differ)."""
    checked_text(value, param=param)
    if not value.startswith("sk-"):
        if regenerate:
            message = (
                "New key must start with 'sk-'. This is to distinguish a key hash (used by litellm for logging / "
                "internal logic) from the actual key."
            )
        else:
            masked = f"{value[:4]}****{value[-4:]}" if len(value) > 8 else "****"
            message = f"Invalid key format. LiteLLM Virtual Key must start with 'sk-'. Received: {masked}"
        raise BadRequestError(message, param=param)
    if len(value) < MIN_CUSTOM_KEY_CHARS:
        if regenerate:
            message = f"New key must be at least {MIN_CUSTOM_KEY_CHARS} characters long."
        else:
            message = (
                f"Invalid key format. LiteLLM Virtual Key must be at least {MIN_CUSTOM_KEY_CHARS} characters long."
            )
        raise BadRequestError(message, param=param)
    return value


def _checked_alias(alias: str | None) -> str | None:
    """LiteLLM's `_validate_key_alias_format`: no control characters, no `..` path segment."""
    if alias is None:
        return None
    checked_text(alias, param="key_alias", max_chars=MAX_TEXT_CHARS)
    if _CONTROL.search(alias) or ".." in alias.replace("\\", "/").split("/"):
        raise BadRequestError(
            'Invalid key_alias: must not contain control characters (such as tab or newline) or a ".." path segment',
            param="key_alias",
        )
    return alias


def _expiry(duration: str | None, now: datetime) -> datetime | None:
    """`duration` ("30s", "30m", "30h", "30d", ...) as an expiry instant counted from now; None or "-1": never."""
    if duration is None or duration == "-1":
        return None
    try:
        seconds = parse_duration(checked_text(duration, param="duration")).seconds
    except ProxyError:
        raise BadRequestError(
            f"Invalid duration '{duration}'. Use a format like '30s', '30m', '30h' or '30d'.", param="duration"
        ) from None
    return now + timedelta(seconds=seconds)
