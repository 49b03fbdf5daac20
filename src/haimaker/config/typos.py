"""Config keys that are not ours: LiteLLM keys we do not implement (warned about, ignored), and typos of ours.

A key close to one of its section's own keys (`timout`, `databse_url`) is named with the key it probably meant. A
typo of a key whose absence changes what the proxy does without failing (the store, the master key, Redis, the
default budget) is an error: a misspelled `database_url` must never fall back to SQLite in silence.
"""

from __future__ import annotations

import difflib
from typing import Any, Final

from pydantic import BaseModel

# Keys whose absence is a silent, different proxy: their typos stop start-up (and `config check`).
MUST_BE_RIGHT: Final = frozenset(
    {"database_url", "master_key", "redis_url", "max_end_user_budget_id", "default_end_user_budget", "model_list"}
)
_CUTOFF: Final = 0.8


def check_extras(config: BaseModel) -> tuple[list[str], list[str]]:
    """(problems, warnings) for every key a section accepted without knowing it."""
    problems: list[str] = []
    warnings: list[str] = []
    _walk(config, "", problems, warnings)
    return problems, warnings


def _walk(model: BaseModel, prefix: str, problems: list[str], warnings: list[str]) -> None:
    own = list(type(model).model_fields)
    for key in model.model_extra or {}:
        close = difflib.get_close_matches(str(key), own, n=1, cutoff=_CUTOFF)
        if not close:
            warnings.append(f"config key not supported yet (ignored): {prefix}{key}")
        elif close[0] in MUST_BE_RIGHT:
            problems.append(
                f"{prefix}{key}: unknown key; did you mean `{close[0]}`? (without it the proxy would run differently, "
                "so this is an error)"
            )
        else:
            warnings.append(f"{prefix}{key}: unknown key (ignored); did you mean `{close[0]}`?")
    for name in own:
        value: Any = getattr(model, name)
        if isinstance(value, BaseModel):
            _walk(value, f"{prefix}{name}.", problems, warnings)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    _walk(item, f"{prefix}{name}[{i}].", problems, warnings)
