"""The one rule for text that reaches the store: customer and budget ids, names, aliases, filters.

Both stores must hold such text and compare it exactly, so it must be valid Unicode that encodes as UTF-8 and has
no NUL: PostgreSQL refuses NUL in `text` and `jsonb` ("unsupported Unicode escape sequence"), and no driver can
encode a lone surrogate (which JSON can carry, as `"\\ud800"`). Length is bounded so that one value cannot cost the
store (or a SQLite LIKE pattern) more than a real id ever needs.

Every edge checks with this module: the LLM routes (`identity.CustomerIdResolver`), the management API (the
pydantic types of `api/schemas.py`) and the services that the admin UI calls. Ids are compared as the exact
sequence of code points: no case folding and no Unicode normalisation, as LiteLLM and both stores do.
"""

from __future__ import annotations

from typing import Final

from haimaker.errors import BadRequestError

MAX_ID_CHARS: Final = 256
# Aliases and other free text shown to admins; also the cap of a search (SQLite refuses LIKE patterns over 50,000).
MAX_TEXT_CHARS: Final = 1024

__all__ = ["MAX_ID_CHARS", "MAX_TEXT_CHARS", "checked_text", "text_problem"]


def text_problem(value: str, max_chars: int = MAX_ID_CHARS) -> str | None:
    """Why `value` cannot be stored, or None if it can. Cheap for the common case: one scan for NUL, ASCII test."""
    if len(value) > max_chars:
        return f"is too long ({len(value)} characters, at most {max_chars})"
    if "\x00" in value:
        return "contains a NUL character"
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:
            return "is not valid UTF-8 (it contains an undecodable byte or a lone surrogate)"
    return None


def checked_text(value: str, *, param: str, what: str | None = None, max_chars: int = MAX_ID_CHARS) -> str:
    """Return `value` if it can be stored.

    Raises:
        BadRequestError: too long, a NUL, or a lone surrogate; `param` names the field or header that carried it.
    """
    problem = text_problem(value, max_chars)
    if problem is not None:
        raise BadRequestError(f"{what or param} {problem}.", param=param)
    return value
