"""Alembic environment for haimaker's schema.

Runs only on a connection handed over by `haimaker.storage.engine.upgrade()` (through `config.attributes`), which
owns the engine, the event loop and the migration lock; there is no alembic.ini and no URL here.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from haimaker.storage.tables import Base


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


_connection = context.config.attributes.get("connection")
if not isinstance(_connection, Connection):
    raise RuntimeError("haimaker's migrations run through haimaker.storage.engine.upgrade(url) (`haimaker db upgrade`)")
run_migrations(_connection)
