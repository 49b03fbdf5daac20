"""Scrubs secrets from everything that may leave the process: upstream errors, bodies, stream events, log lines.

One `Redactor` holds every configured secret *by value* (each deployment's `api_key`, the master key, the Redis and
database passwords), built once at startup (`Redactor.from_settings`) and handed to whatever relays upstream bytes or
writes logs. Matching by value is what catches an Azure key (32 bare hex characters) or a passphrase that no pattern
would recognise; the old pattern for key-shaped tokens (`sk-...`, `Bearer ...`) stays as a second net, in error
texts and log lines only (a model's answer may legitimately contain `sk-...` in a code sample).

What counts as a secret's appearance (decided for issue 10, "secrets by value"):
- the value itself, and its URL-encoded, JSON-escaped and base64 forms (base64 at any alignment, so a key inside an
  `Authorization: Basic base64(user:key)` header is caught whatever the user name);
- in error texts and log lines, also any run of `FRAGMENT_CHARS` (12) or more consecutive characters of a secret:
  an upstream that truncates what it echoes ("Invalid key 'sk-proj-abcdefghij...'") still leaks most of a key;
- not values shorter than `MIN_SECRET_CHARS` (6): redacting those would shred ordinary words; the startup warns.
Successful bodies and stream events are checked for whole values only (a byte search per secret: cheap enough for
every relayed piece), never for fragments or patterns.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, quote_plus, unquote, urlsplit

import orjson

if TYPE_CHECKING:
    from haimaker.config.loader import Settings

logger = logging.getLogger("haimaker.redaction")

REDACTED: Final = "[REDACTED]"
MIN_SECRET_CHARS: Final = 6
FRAGMENT_CHARS: Final = 12
_MAX_MESSAGE_CHARS = 1000

# Things that look like API keys or bearer tokens, whoever they belong to.
_KEY_PATTERN = re.compile(r"\b(sk|pk|rk|key|api[-_]?key)[-_][A-Za-z0-9_\-*.]{4,}|Bearer\s+\S+", re.IGNORECASE)


def _base64_cores(secret: bytes) -> list[str]:
    """The base64 characters that depend on `secret` alone, for each of the 3 alignments it can have in a blob."""
    cores = []
    for offset, skip in ((0, 0), (1, 2), (2, 3)):
        encoded = base64.b64encode(b"\0" * offset + secret).decode()
        whole_groups = 4 * ((offset + len(secret)) // 3)  # a last partial group depends on what follows
        core = encoded[skip:whole_groups]
        if len(core) >= FRAGMENT_CHARS:
            cores.append(core)
    return cores


def _forms(secret: str) -> set[str]:
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe=""), orjson.dumps(secret).decode()[1:-1]}
    forms.update(_base64_cores(secret.encode()))
    return forms


class Redactor:
    """Every configured secret, by value; immutable once built (shared by the event loop and logging threads)."""

    __slots__ = ("_byte_forms", "_forms", "_fragments", "secrets")

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        values = sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)
        self.secrets: tuple[str, ...] = tuple(values)
        forms: set[str] = set()
        for value in values:
            forms |= _forms(value)
        # Longest first, so that a secret containing another is replaced whole.
        self._forms: tuple[str, ...] = tuple(sorted(forms, key=len, reverse=True))
        # Bodies and stream events are JSON: the value as it is, or JSON-escaped (a key with a quote or backslash).
        byte_forms = {v.encode() for v in values} | {orjson.dumps(v)[1:-1] for v in values}
        self._byte_forms: tuple[bytes, ...] = tuple(sorted(byte_forms, key=len, reverse=True))
        self._fragments: dict[str, tuple[str, int]] = {}
        for value in values:
            for start in range(len(value) - FRAGMENT_CHARS + 1):
                self._fragments.setdefault(value[start : start + FRAGMENT_CHARS], (value, start))

    @classmethod
    def from_settings(cls, settings: Settings) -> Redactor:
        """The secrets of a loaded config: upstream keys, master key, Redis and database passwords."""
        named: list[tuple[str, str | None]] = [("master_key", settings.master_key)]
        config = settings.config
        for i, entry in enumerate(config.model_list):
            params = entry.litellm_params
            named.append((f"model_list[{i}].litellm_params.api_key", params.api_key))
            for name in SECRET_PARAMS:
                for secret in _secret_values(getattr(params, name, None) or (params.model_extra or {}).get(name)):
                    named.append((f"model_list[{i}].litellm_params.{name}", secret))
        named.append(("router_settings.redis_password", config.router_settings.redis_password))
        for i, sink in enumerate(config.general_settings.usage_export):
            named += [(f"general_settings.usage_export[{i}] secret", secret) for secret in sink.secrets]
        # Provider credentials a deployment may take from the environment instead of its config (LiteLLM's names).
        named += [(name, os.environ.get(name)) for name in PROVIDER_ENV_SECRETS]
        if "webhook" in config.general_settings.alerting:
            # A webhook URL is a bearer credential (Slack's and most others carry their secret in the path).
            named.append(("WEBHOOK_URL", os.environ.get("WEBHOOK_URL")))
        for name, url in (("redis_url", settings.redis_url), ("database_url", settings.database_url)):
            password = _password_of(url)
            # As written in the URL (maybe percent-encoded) and as a driver would print it, decoded.
            named += [(f"{name} password", password), (f"{name} password", unquote(password) if password else None)]
        for name, value in named:
            if value and len(value) < MIN_SECRET_CHARS:
                logger.warning("%s is shorter than %d characters: it is not redacted by value", name, MIN_SECRET_CHARS)
        return cls(value for _, value in named)

    def holds(self, secrets: Iterable[str]) -> bool:
        """Whether every one of `secrets` that can be redacted already is."""
        return all(s in self.secrets for s in secrets if s and len(s) >= MIN_SECRET_CHARS)

    def text(self, text: str) -> str:
        """`text` with every secret (value, encoded forms, long fragments) and every key-shaped token removed."""
        for form in self._forms:
            if form in text:
                text = text.replace(form, REDACTED)
        if self._fragments and len(text) >= FRAGMENT_CHARS:
            text = self._without_fragments(text)
        return _KEY_PATTERN.sub(REDACTED, text)

    def message(self, message: str) -> str:
        """`text()`, capped to a length fit for an error message (redacted before the cap can cut a secret)."""
        message = self.text(message)
        if len(message) > _MAX_MESSAGE_CHARS:
            message = message[:_MAX_MESSAGE_CHARS] + "…"
        return message

    def value(self, value: Any) -> Any:
        """A JSON value with `message()` applied to every string in it, keys included."""
        if isinstance(value, str):
            return self.message(value)
        if isinstance(value, Mapping):
            return {self.message(str(k)): self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def contains_secret(self, data: bytes) -> bool:
        """Whether `data` carries a secret's value, as is or JSON-escaped (a byte search each, on every piece)."""
        for form in self._byte_forms:  # a plain loop: this runs for every relayed piece
            if form in data:
                return True
        return False

    def bytes(self, data: bytes) -> bytes:
        """`data` with every secret replaced, as is or JSON-escaped (JSON-safe: the replacement needs no escaping)."""
        for form in self._byte_forms:
            if form in data:
                data = data.replace(form, b"[REDACTED]")
        return data

    def _without_fragments(self, text: str) -> str:
        out: list[str] = []
        pos = 0
        i = 0
        limit = len(text) - FRAGMENT_CHARS
        while i <= limit:
            found = self._fragments.get(text[i : i + FRAGMENT_CHARS])
            if found is None:
                i += 1
                continue
            secret, offset = found
            start, end, s_start, s_end = i, i + FRAGMENT_CHARS, offset, offset + FRAGMENT_CHARS
            while start > pos and s_start > 0 and text[start - 1] == secret[s_start - 1]:
                start, s_start = start - 1, s_start - 1
            while end < len(text) and s_end < len(secret) and text[end] == secret[s_end]:
                end, s_end = end + 1, s_end + 1
            out.append(text[pos:start])
            out.append(REDACTED)
            pos = i = end
        if not out:
            return text
        out.append(text[pos:])
        return "".join(out)


def _password_of(url: str | None) -> str | None:
    if not url or "@" not in url:
        return None
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def sanitize_message(message: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove the given secrets and anything shaped like a key; cap the length (`Redactor.message`)."""
    return Redactor(secrets).message(message)


class RedactingLogRecords:
    """Redacts every log record of the process when it is created: message, arguments and exception text.

    Installed as the log-record factory rather than as a handler filter, so that records reach every handler
    (added before or after startup, the server's own included) already clean, from every logger (a driver's error
    that quotes a database URL with its password as much as ours). `uninstall()` undoes it.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._active = True
        self._previous: Callable[..., logging.LogRecord] = logging.getLogRecordFactory()
        logging.setLogRecordFactory(self._make)

    def _make(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self._previous(*args, **kwargs)
        if self._active:
            redact_record(record, self._redactor)
        return record

    def uninstall(self) -> None:
        self._active = False
        if logging.getLogRecordFactory() == self._make:
            logging.setLogRecordFactory(self._previous)
        # Otherwise another app installed its own factory on top of ours: ours stays in its chain, inert.


def redact_record(record: logging.LogRecord, redactor: Redactor) -> None:
    """Scrub a record's message template, each of its arguments, and its exception and stack text.

    Arguments are scrubbed one by one rather than rendered into the message, so that formatters which read them
    (uvicorn's access log unpacks `record.args`) keep working; numbers pass untouched, so `%d` still formats.
    """
    record.msg = redactor.text(record.msg if isinstance(record.msg, str) else str(record.msg))
    args = record.args
    if isinstance(args, tuple):
        record.args = tuple(_redacted_arg(arg, redactor) for arg in args)
    elif isinstance(args, Mapping):
        record.args = {key: _redacted_arg(value, redactor) for key, value in args.items()}
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        # Also when another factory in the chain (a second app in one process) rendered it first, with its secrets.
        record.exc_text = redactor.text(record.exc_text)
    if record.stack_info:
        record.stack_info = redactor.text(record.stack_info)


class _RedactedText(str):
    """A scrubbed rendering of a log argument that formats the same with `%s` and `%r`."""

    _repr: str  # a str subclass cannot have non-empty __slots__

    def __new__(cls, text: str, representation: str) -> _RedactedText:
        value = super().__new__(cls, text)
        value._repr = representation
        return value

    def __repr__(self) -> str:
        return self._repr


def _redacted_arg(arg: object, redactor: Redactor) -> object:
    if arg is None or isinstance(arg, bool | int | float):
        return arg
    text = arg if isinstance(arg, str) else str(arg)
    representation = repr(arg)
    clean_text, clean_repr = redactor.text(text), redactor.text(representation)
    if clean_text == text and clean_repr == representation:
        return arg
    return _RedactedText(clean_text, clean_repr)


PROVIDER_ENV_SECRETS = (
    "OPENAI_API_KEY",
    "AZURE_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)

# Provider credentials in `litellm_params` besides `api_key` (LiteLLM's names).
SECRET_PARAMS = ("aws_secret_access_key", "aws_session_token", "aws_access_key_id", "vertex_credentials")


def _secret_values(value: object) -> list[str]:
    """The secret strings of a credential parameter: the value itself, and for a service-account JSON (inline or a
    mapping) its private key and private key id too, so a fragment of either is scrubbed."""
    if not isinstance(value, str | dict):
        return []
    found = [value] if isinstance(value, str) else []
    account: object = value
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            account = orjson.loads(value)
        except orjson.JSONDecodeError:
            account = None
    if isinstance(account, dict):
        found += [v for k, v in account.items() if k in ("private_key", "private_key_id") and isinstance(v, str)]
    return found
