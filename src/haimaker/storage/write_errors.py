"""What a failed write says about itself: is the data at fault, or the store? And a description safe to keep.

`is_data_error` is deliberately narrow: only errors that a given row causes wherever it is written (an invalid or
out-of-range value, a violated constraint, a value the driver cannot encode). Everything else (connection refused,
timeouts, a locked or read-only file, a missing table, disk full) is store trouble: the group is kept whole and
retried, never split into dead letters, so an outage can never turn good charges into dead letters.
"""

from __future__ import annotations

import re
from typing import Final

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

# SQLSTATE classes of the row's own fault: 22 data exception (bad value, out of range, untranslatable character),
# 23 integrity constraint violation. The asyncpg dialect reports most of them as a plain DBAPIError.
_DATA_SQLSTATE_CLASSES: Final = ("22", "23")
# Raised while building a statement's parameters from a row (orjson's "Integer exceeds 64-bit range" is a TypeError).
_ROW_ENCODING_ERRORS: Final = (ValueError, TypeError, OverflowError, ArithmeticError, UnicodeError)
_MAX_DESCRIPTION: Final = 300
_UNPRINTABLE: Final = re.compile(r"[^\x20-\x7e]")


def is_data_error(exc: BaseException) -> bool:
    """Whether `exc` is a row's own fault (splitting the group isolates it), not the store's."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    if isinstance(exc, DBAPIError):
        state = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        return isinstance(state, str) and state[:2] in _DATA_SQLSTATE_CLASSES
    if isinstance(exc, StatementError):  # a bind processor refused a value (e.g. a naive datetime)
        return isinstance(exc.orig, _ROW_ENCODING_ERRORS)
    return isinstance(exc, _ROW_ENCODING_ERRORS) and not isinstance(exc, OSError)


def describe_error(exc: BaseException) -> str:
    """A short ASCII description of a failed write: the driver's first line, never the SQL or its parameters
    (SQLAlchemy appends both to its messages, and the parameters carry whole rows)."""
    cause: BaseException = exc
    if isinstance(exc, StatementError) and isinstance(exc.orig, BaseException):
        cause = exc.orig
    lines = str(cause).strip().splitlines()
    first = lines[0] if lines else ""
    text = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
    return _UNPRINTABLE.sub("?", text)[:_MAX_DESCRIPTION]
