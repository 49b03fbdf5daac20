"""Scrubs secrets from text that may leave the process (error messages, logs).

Upstream error bodies can echo the key we sent (OpenAI's "Incorrect API key provided: sk-..."),
so every upstream message passes through `sanitize_message` before a client or a log sees it.
"""

from __future__ import annotations

import re

# Things that look like API keys or bearer tokens, whoever they belong to.
_KEY_PATTERN = re.compile(r"\b(sk|pk|rk|key|api[-_]?key)[-_][A-Za-z0-9_\-*.]{4,}|Bearer\s+\S+", re.IGNORECASE)
_MAX_MESSAGE_CHARS = 1000


def sanitize_message(message: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove known secrets and anything shaped like a key; cap the length."""
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[REDACTED]")
    message = _KEY_PATTERN.sub("[REDACTED]", message)
    if len(message) > _MAX_MESSAGE_CHARS:
        message = message[:_MAX_MESSAGE_CHARS] + "…"
    return message
