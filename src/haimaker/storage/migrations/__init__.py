"""Alembic migrations (`versions/`), run only by `haimaker.storage.engine.upgrade()`."""

from typing import Final

# The newest revision in `versions/`. A start whose database is already here skips Alembic altogether; a test checks
# this against Alembic's own view, so adding a migration without updating it fails the suite.
HEAD_REVISION: Final = "0004"
