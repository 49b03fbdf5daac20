"""Virtual keys held in memory, so that authenticating a request never waits on the database.

Loaded whole at start-up (keys are few: one per app server or per integration, not per customer) and kept current by
the service layer after every admin write (`Services.key_changed`) and, with several instances, by invalidation
messages. A key's counters live in the `CounterStore` under `key_subject(token)`: a NUL-prefixed id that no customer
id can take (`ids.py` refuses NUL), so a key and a customer never share counters.
"""

from __future__ import annotations

from collections.abc import Iterable

from haimaker.storage.records import VirtualKey

_KEY_PREFIX = "\x00key:"


def key_subject(token: str) -> str:
    """The counter-store id of a key's own limits (spend, rpm, tpm, parallel)."""
    return f"{_KEY_PREFIX}{token}"


def key_model_subject(token: str, model: str) -> str:
    """The counter-store id of a key's limits on one model (`model_rpm_limit`, `model_tpm_limit`)."""
    return f"{_KEY_PREFIX}{token}\x00{model}"


def token_of_subject(subject: str) -> str | None:
    """The key token a key subject belongs to (None for a customer id, or a key's per-model subject)."""
    if not subject.startswith(_KEY_PREFIX):
        return None
    token = subject[len(_KEY_PREFIX) :]
    return None if "\x00" in token else token


class KeyCatalog:
    """Every virtual key by token (SHA-256 hex of the key)."""

    def __init__(self) -> None:
        self.keys: dict[str, VirtualKey] = {}

    def load(self, keys: Iterable[VirtualKey]) -> None:
        self.keys = {k.token: k for k in keys}

    def get(self, token: str) -> VirtualKey | None:
        return self.keys.get(token)

    def put(self, key: VirtualKey) -> None:
        self.keys[key.token] = key

    def drop(self, token: str) -> None:
        self.keys.pop(token, None)

    def __len__(self) -> int:
        return len(self.keys)
