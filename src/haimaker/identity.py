"""Who is calling: the proxy key (authentication) and the customer id a request is billed to.

Customer id sources, first match wins (CONTRACT §1): headers `x-litellm-customer-id`,
`x-litellm-end-user-id`; the headers configured in `general_settings.user_header_mappings` (role
`customer`) or `user_header_name`; body `user`; `litellm_metadata.user`; `metadata.user_id`;
`safety_identifier`.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Mapping
from typing import Any

from haimaker.errors import AuthenticationError, InvalidKeyError, PermissionDeniedError
from haimaker.ids import MAX_ID_CHARS, checked_text

logger = logging.getLogger("haimaker.auth")

MAX_CUSTOMER_ID_CHARS = MAX_ID_CHARS
_FIXED_CUSTOMER_HEADERS = ("x-litellm-customer-id", "x-litellm-end-user-id")
_KEY_HEADERS = ("x-litellm-api-key", "authorization", "api-key")
WEAK_MASTER_KEYS = frozenset({"sk-1234"})


def hash_key(key: str) -> bytes:
    """Keys are kept only as SHA-256 digests."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


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


class Authenticator:
    """Checks the master key (and admin keys) in constant time; holds only hashes."""

    def __init__(self, master_key: str | None, *, allow_unauthenticated: bool = False) -> None:
        self._master_hash = hash_key(master_key) if master_key else None
        self._admin_hashes: set[bytes] = set()
        self.allow_unauthenticated = allow_unauthenticated
        if master_key in WEAK_MASTER_KEYS:
            logger.warning("the master key is a publicly known example key; set a secret one for production")

    @property
    def has_master_key(self) -> bool:
        return self._master_hash is not None

    def add_admin_key_hash(self, digest: bytes) -> None:
        self._admin_hashes.add(digest)

    def _is_admin(self, key: str) -> bool:
        digest = hash_key(key)
        ok = False
        if self._master_hash is not None:
            ok = hmac.compare_digest(digest, self._master_hash)
        for admin in self._admin_hashes:
            ok = hmac.compare_digest(digest, admin) or ok
        return ok

    def check_llm(self, headers: Mapping[str, str]) -> str:
        """Authenticate an LLM route call; return the key's SHA-256 (hex) for the spend log ("" when open)."""
        if self._master_hash is None:
            if self.allow_unauthenticated:
                return ""
            raise PermissionDeniedError(
                "No master key is configured: set general_settings.master_key (or LITELLM_MASTER_KEY), or "
                "general_settings.allow_unauthenticated: true to serve LLM routes without a key.",
                error_type="auth_error",
            )
        key = key_from_headers(headers)
        if key is None:
            raise AuthenticationError("Authentication Error, No api key passed in.")
        if not self._is_admin(key):
            raise InvalidKeyError("Authentication Error, Invalid proxy server token passed. Unable to find token.")
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()

    def check_admin(self, headers: Mapping[str, str]) -> None:
        """Authenticate a management route call: master key or an admin key."""
        if self._master_hash is None:
            raise PermissionDeniedError(
                "Management routes need a master key: set general_settings.master_key (or LITELLM_MASTER_KEY).",
                error_type="auth_error",
            )
        key = key_from_headers(headers)
        if key is None:
            raise AuthenticationError("Authentication Error, No api key passed in.")
        if not self._is_admin(key):
            raise InvalidKeyError("Authentication Error, Invalid proxy server token passed. Unable to find token.")

    def is_admin_key(self, key: str) -> bool:
        return self._master_hash is not None and self._is_admin(key)


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
