"""Who is calling: the proxy key (authentication, roles) and the customer id a request is billed to.

Keys: the master key, and virtual keys (`/key/*`, stored as LiteLLM stores them: SHA-256 hex). A virtual key's
`key_type` is its role (`Role`); its `allowed_routes` can narrow the role, never widen it.

Customer id sources, first match wins (CONTRACT §1): headers `x-litellm-customer-id`,
`x-litellm-end-user-id`; the headers configured in `general_settings.user_header_mappings` (role
`customer`) or `user_header_name`; body `user`; `litellm_metadata.user`; `metadata.user_id`;
`safety_identifier`.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from haimaker.clock import Clock
from haimaker.errors import AuthenticationError, InvalidKeyError, PermissionDeniedError
from haimaker.ids import MAX_ID_CHARS, checked_text
from haimaker.state.keys import KeyCatalog
from haimaker.storage.records import VirtualKey

logger = logging.getLogger("haimaker.auth")

MAX_CUSTOMER_ID_CHARS = MAX_ID_CHARS
_FIXED_CUSTOMER_HEADERS = ("x-litellm-customer-id", "x-litellm-end-user-id")
_KEY_HEADERS = ("x-litellm-api-key", "authorization", "api-key", "x-api-key")  # x-api-key: Anthropic SDK
WEAK_MASTER_KEYS = frozenset({"sk-1234"})


def hash_key(key: str) -> bytes:
    """Keys are kept only as SHA-256 digests."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def hash_token(key: str) -> str:
    """A key's stored form: the SHA-256 hex of the key, as LiteLLM stores `token` (imported keys keep working)."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def abbreviate_key(key: str) -> str:
    """A key as it may be shown again after creation: `sk-...` and its last four characters (LiteLLM's `key_name`)."""
    return "sk-..." if len(key) < _MIN_ABBREVIATED_CHARS else f"sk-...{key[-4:]}"


def key_from_headers(headers: Mapping[str, str]) -> str | None:
    """The proxy key: `x-litellm-api-key`, else `Authorization: Bearer`, else `api-key`.

    `x-litellm-api-key` wins over `Authorization` as in LiteLLM: it exists so that a client whose SDK
    always sends `Authorization` (the openai SDK insists on an api_key) can still present the proxy key.
    A `Bearer ` prefix is accepted in every header.
    """
    for name in _KEY_HEADERS:
        token = _bearer_or_raw(headers.get(name))
        if token:
            return token
    return None


def _bearer_or_raw(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return (token.strip() if scheme.lower() == "bearer" else value.strip()) or None


class Role(enum.Enum):
    """What a caller may reach. A key that may call LLMs never reaches an admin route, and the other way round."""

    MASTER = "master"  # everything
    MANAGEMENT = "management"  # the admin API and UI, reads and writes; no LLM calls
    READ_ONLY = "read_only"  # the admin API's reads and the UI without writes; no LLM calls
    LLM = "llm"  # LLM routes only (key_type `llm_api` and `default`)


_ROLE_OF_KEY_TYPE: Final = {"management": Role.MANAGEMENT, "read_only": Role.READ_ONLY}


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller: its role, its key's SHA-256 hex, and its virtual key (None for the master key)."""

    role: Role
    token: str
    key: VirtualKey | None = None

    @property
    def can_call_llm(self) -> bool:
        return self.role is Role.MASTER or self.role is Role.LLM

    @property
    def can_read_admin(self) -> bool:
        return self.role is not Role.LLM

    @property
    def can_write_admin(self) -> bool:
        return self.role is Role.MASTER or self.role is Role.MANAGEMENT

    @property
    def customer_id(self) -> str | None:
        """The customer every request of this key belongs to (haimaker's trusted identity), if bound."""
        return self.key.customer_id if self.key is not None else None


OPEN_CALLER: Final = Caller(Role.MASTER, "")


@dataclass(slots=True)
class Attribution:
    """Whom one request was served for, filled in by the pipeline as it learns it (for the access log, which
    hands one in only when it is on: `api/access_log.py`)."""

    caller: Caller | None = None
    customer_id: str | None = None

    @property
    def key_label(self) -> str | None:
        """The key as logs may name it: its alias, else its abbreviation (`sk-...abcd`), `master`; never the key."""
        caller = self.caller
        if caller is None or not caller.token:
            return None  # no key (an unauthenticated proxy)
        if caller.key is None:
            return "master"
        return caller.key.key_alias or caller.key.key_name


# An unknown key is looked up in the store (it may have been created on another instance a moment ago).
KeyLookup = Callable[[str], Awaitable[VirtualKey | None]]


class Authenticator:
    """Resolves a presented key to a `Caller`: the master key (constant-time), else a virtual key by its SHA-256 hex
    in the in-memory `KeyCatalog` (a dict read: no database round trip on the hot path). A key the catalog does not
    hold is looked up in the store once (another instance may have just created it) before it is refused."""

    def __init__(
        self,
        master_key: str | None,
        *,
        keys: KeyCatalog,
        clock: Clock,
        lookup: KeyLookup | None = None,
        allow_unauthenticated: bool = False,
    ) -> None:
        self._master_hash = hash_key(master_key) if master_key else None
        # One object for every master-key request (the hot path allocates nothing for it).
        self._master_caller = Caller(Role.MASTER, self._master_hash.hex()) if self._master_hash is not None else None
        self._keys = keys
        self._clock = clock
        self._lookup = lookup
        self.allow_unauthenticated = allow_unauthenticated
        if master_key in WEAK_MASTER_KEYS:
            logger.warning("the master key is a publicly known example key; set a secret one for production")

    @property
    def has_master_key(self) -> bool:
        return self._master_hash is not None

    def _is_master(self, digest: bytes) -> bool:
        return self._master_hash is not None and hmac.compare_digest(digest, self._master_hash)

    def caller_for_key(self, key: str) -> Caller | None:
        """The caller a key stands for, from memory only (None: unknown). Expiry and blocking are not checked."""
        digest = hash_key(key)
        if self._is_master(digest):
            return self._master_caller
        return self._caller_of(self._keys.get(digest.hex()))

    @staticmethod
    def _caller_of(record: VirtualKey | None) -> Caller | None:
        if record is None:
            return None
        return Caller(_ROLE_OF_KEY_TYPE.get(record.key_type, Role.LLM), record.token, record)

    async def identify(self, headers: Mapping[str, str]) -> Caller:
        """The caller of a request.

        Raises:
            PermissionDeniedError: no master key is configured (and no open mode), so no key can be checked.
            AuthenticationError: no key, or an expired or blocked key (401, LiteLLM's messages).
            InvalidKeyError: a key that matches nothing (counted by the failed-key throttle).
        """
        if self._master_hash is None:
            raise PermissionDeniedError(
                "No master key is configured: set general_settings.master_key (or LITELLM_MASTER_KEY), or "
                "general_settings.allow_unauthenticated: true to serve LLM routes without a key.",
                error_type="auth_error",
            )
        key = key_from_headers(headers)
        if key is None:
            raise AuthenticationError("Authentication Error, No api key passed in.")
        caller = self.caller_for_key(key)
        if caller is None and self._lookup is not None:
            record = await self._lookup(hash_token(key))
            if record is not None:
                self._keys.put(record)
            caller = self._caller_of(record)
        if caller is None:
            raise InvalidKeyError("Authentication Error, Invalid proxy server token passed. Unable to find token.")
        record = caller.key
        if record is not None:
            if record.blocked:
                raise AuthenticationError(
                    "Authentication Error, Key is blocked. Update via `/key/unblock` if you're an admin."
                )
            now = self._clock.now() if record.expires is not None else None
            if record.expires is not None and now is not None and record.expires < now:
                raise AuthenticationError(
                    f"Authentication Error - Expired Key. Key Expiry time {record.expires} and current time {now}",
                    error_type="expired_key",
                    param=abbreviate_key(key),
                )
        return caller

    async def check_llm(self, headers: Mapping[str, str], path: str) -> Caller:
        """Authenticate an LLM route call (`OPEN_CALLER` in open mode without a master key)."""
        if self._master_hash is None and self.allow_unauthenticated:
            return OPEN_CALLER
        caller = await self.identify(headers)
        if not caller.can_call_llm:
            raise route_denied(caller, path, "this key's key_type only reaches the admin API")
        check_allowed_routes(caller, path, is_llm=True, is_write=True)
        return caller

    async def check_admin(self, headers: Mapping[str, str], method: str, path: str) -> Caller:
        """Authenticate a management route call: the master key, or a `management` key; a `read_only` key for
        reads (GET and HEAD) only."""
        if self._master_hash is None:
            raise PermissionDeniedError(
                "Management routes need a master key: set general_settings.master_key (or LITELLM_MASTER_KEY).",
                error_type="auth_error",
            )
        caller = await self.identify(headers)
        is_write = method not in _READ_METHODS
        if not caller.can_read_admin:
            raise route_denied(caller, path, "LLM keys (key_type llm_api or default) never reach the admin API")
        if is_write and not caller.can_write_admin:
            raise route_denied(caller, path, "a read_only key may only read")
        check_allowed_routes(caller, path, is_llm=False, is_write=is_write)
        return caller


_READ_METHODS: Final = frozenset({"GET", "HEAD"})
_MIN_ABBREVIATED_CHARS: Final = 8


def route_denied(caller: Caller, path: str, why: str) -> PermissionDeniedError:
    """403 for a key outside its role (LiteLLM's message, then why)."""
    allowed = list(caller.key.allowed_routes) if caller.key is not None and caller.key.allowed_routes else []
    if not allowed and caller.key is not None:
        allowed = [_GROUP_OF_ROLE[caller.role]]
    return PermissionDeniedError(
        f"Virtual key is not allowed to call this route. Only allowed to call routes: {allowed}. "
        f"Tried to call route: {path} ({why}).",
        error_type="auth_error",
    )


_GROUP_OF_ROLE: Final = {
    Role.MASTER: "*",
    Role.MANAGEMENT: "management_routes",
    Role.READ_ONLY: "info_routes",
    Role.LLM: "llm_api_routes",
}


def check_allowed_routes(caller: Caller, path: str, *, is_llm: bool, is_write: bool) -> None:
    """A key's `allowed_routes` narrow its role (they never widen it): each entry is a route group
    (`llm_api_routes`, `management_routes`, `info_routes`), an exact path, or a path ending in `*` (a prefix)."""
    record = caller.key
    if record is None or not record.allowed_routes:
        return
    for allowed in record.allowed_routes:
        if allowed == "llm_api_routes" and is_llm:
            return
        if allowed == "management_routes" and not is_llm:
            return
        if allowed == "info_routes" and not is_llm and not is_write:
            return
        if allowed == path or (allowed.endswith("*") and path.startswith(allowed[:-1])):
            return
    raise route_denied(caller, path, "not in the key's allowed_routes")


class CustomerIdResolver:
    """Reads the customer id of a request from its headers and body."""

    def __init__(self, user_header_name: str | None, mapped_headers: list[str]) -> None:
        headers = list(_FIXED_CUSTOMER_HEADERS) + [h.lower() for h in mapped_headers]
        if user_header_name:
            headers.append(user_header_name.lower())
        self._headers = tuple(dict.fromkeys(headers))

    def resolve(self, headers: Mapping[str, str], body: Mapping[str, Any]) -> str | None:
        """The customer id, or None.

        Raises:
            BadRequestError: the id cannot be stored (`ids.text_problem`); `param` names the header or field.
        """
        for name in self._headers:
            value = _coerce(headers.get(name))
            if value is not None:
                return _checked(value, name)
        value = _coerce(body.get("user"))
        if value is not None:
            return _checked(value, "user")
        value = _nested(body, "litellm_metadata", "user")
        if value is not None:
            return _checked(value, "litellm_metadata.user")
        value = _nested(body, "metadata", "user_id")
        if value is not None:
            return _checked(value, "metadata.user_id")
        value = _coerce(body.get("safety_identifier"))
        return None if value is None else _checked(value, "safety_identifier")


def _nested(body: Mapping[str, Any], outer: str, inner: str) -> str | None:
    container = body.get(outer)
    return _coerce(container.get(inner)) if isinstance(container, dict) else None


def _coerce(value: Any) -> str | None:
    """Strings stripped, numbers as strings; empty, booleans and objects ignored (as LiteLLM)."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _checked(customer_id: str, param: str) -> str:
    # The same rule as every admin route, so a customer the API can name is the customer traffic bills.
    return checked_text(customer_id, param=param, what="Customer id", max_chars=MAX_CUSTOMER_ID_CHARS)
