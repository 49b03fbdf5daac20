from __future__ import annotations

from dbs import database_kind, database_url  # noqa: F401
