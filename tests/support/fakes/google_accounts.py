"""Test service accounts and the OAuth 2.0 token endpoint that serves them (Google's JWT bearer grant, RFC 7523).

`ServiceAccounts.create()` makes a service-account JSON with a freshly generated RSA key whose `token_uri` is the
fake's `/token`; `exchange()` checks a token request as Google's endpoint does (the form fields, the RS256
signature against the account's public key, `iss`, `aud` (always Google's token endpoint), `scope`, `iat`/`exp`)
and issues an access token that the fake's Vertex routes then accept until it expires.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class TokenRefused(Exception):
    """Google's `{"error": "invalid_grant", "error_description": ...}` (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class _Account:
    email: str
    key_id: str
    public_key: rsa.RSAPublicKey


class ServiceAccounts:
    """The accounts the fake knows and the access tokens it has issued (thread-safe)."""

    def __init__(self, token_lifetime_s: int = 3600) -> None:
        self.token_lifetime_s = token_lifetime_s
        self._accounts: dict[str, _Account] = {}
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._lock = threading.Lock()
        self.issued = 0

    def create(self, token_uri: str, *, project_id: str | None = "fake-project") -> dict[str, Any]:
        """A new service-account JSON (as a mapping) whose key the fake trusts."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(20)
        email = f"sa-{secrets.token_hex(4)}@fake-project.iam.gserviceaccount.com"
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        with self._lock:
            self._accounts[email] = _Account(email, key_id, key.public_key())
        info: dict[str, Any] = {
            "type": "service_account",
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": email,
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        }
        if project_id is not None:
            info["project_id"] = project_id
        return info

    def exchange(self, form: dict[str, str]) -> dict[str, Any]:
        """The token response for a JWT bearer grant; raise `TokenRefused` as Google would."""
        if form.get("grant_type") != JWT_BEARER:
            raise TokenRefused(f"unsupported grant_type {form.get('grant_type')!r}")
        assertion = form.get("assertion") or ""
        try:
            head_b64, claims_b64, signature_b64 = assertion.split(".")
            header = orjson.loads(_unb64(head_b64))
            claims = orjson.loads(_unb64(claims_b64))
        except (ValueError, orjson.JSONDecodeError) as exc:
            raise TokenRefused(f"malformed assertion: {exc}") from None
        with self._lock:
            account = self._accounts.get(str(claims.get("iss")))
        if account is None:
            raise TokenRefused("Invalid JWT: unknown issuer")
        if header.get("alg") != "RS256" or header.get("kid") != account.key_id:
            raise TokenRefused(f"Invalid JWT header {header}")
        try:
            account.public_key.verify(
                _unb64(signature_b64), f"{head_b64}.{claims_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            raise TokenRefused("Invalid JWT Signature.") from None
        now = time.time()
        # Google documents the audience as always its token endpoint, wherever the request is sent.
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            raise TokenRefused(f"Invalid JWT: aud {claims.get('aud')!r} is not {GOOGLE_TOKEN_AUDIENCE!r}")
        if CLOUD_PLATFORM not in str(claims.get("scope", "")).split():
            raise TokenRefused(f"Invalid JWT: scope {claims.get('scope')!r} lacks cloud-platform")
        if not (claims.get("iat", 0) <= now + 60 and claims.get("exp", 0) > now):
            raise TokenRefused("Invalid JWT: Token must be a short-lived token and in a reasonable timeframe.")
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = time.monotonic() + self.token_lifetime_s
            self.issued += 1
        return {"access_token": token, "expires_in": self.token_lifetime_s, "token_type": "Bearer"}

    def is_valid(self, token: str) -> bool:
        """Whether `token` was issued here and has not expired."""
        with self._lock:
            expiry = self._tokens.get(token)
        return expiry is not None and expiry > time.monotonic()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
