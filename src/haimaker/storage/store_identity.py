"""Which store this is: never take a deleted, replaced or emptied database for a new one.

Migration 0002 writes a random `store_id` into `haimaker_meta` when a store is created. A proxy remembers, per
database URL, the id it found (`<config dir>/store-id`, JSON `{url without password: id}`), and at every start
checks the store before migrating it: a SQLite file that is gone, or a store whose id differs or is missing (a new
empty file, an emptied PostgreSQL), is refused with `StoreIdentityError`, which says how to start fresh on purpose.
Without the check, the migration would quietly create an empty store and every customer's spend would restart at 0.

A URL never seen before (first start, or the operator pointed the config at another database) is simply
remembered. In-memory SQLite has no identity to keep.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final

import orjson
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from haimaker.storage.engine import create_engine

logger = logging.getLogger("haimaker.storage")

STORE_ID_FILENAME: Final = "store-id"
_READ_STORE_ID: Final = text("SELECT value FROM haimaker_meta WHERE key = 'store_id'")


class StoreIdentityError(Exception):
    """The configured store is not the one this proxy wrote to before."""


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for other engines and for in-memory SQLite."""
    sa_url = make_url(url)
    if sa_url.get_backend_name() != "sqlite" or sa_url.database in (None, "", ":memory:"):
        return None
    return Path(sa_url.database).absolute()


def is_memory(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite" and sqlite_path(url) is None


def store_key(url: str) -> str:
    """How a store is named in the memory file: its file, or its URL without the password."""
    path = sqlite_path(url)
    if path is not None:
        return f"sqlite:{path}"
    return make_url(url).set(drivername=make_url(url).get_backend_name()).render_as_string(hide_password=True)


async def read_store_id(engine: AsyncEngine) -> str | None:
    """The store's id; None when it has none (no schema, or emptied). Connection errors propagate."""
    async with engine.connect() as connection:
        try:
            return (await connection.execute(_READ_STORE_ID)).scalar_one_or_none()
        except DBAPIError:
            return None


def remembered_store_id(memory: Path, url: str) -> str | None:
    return _read_memory(memory).get(store_key(url))


async def verify_store(url: str, memory: Path) -> None:
    """Before migrating: refuse a store other than the one remembered for `url` (see the module docstring)."""
    if is_memory(url):
        return
    remembered = remembered_store_id(memory, url)
    if remembered is None:
        return
    path = sqlite_path(url)
    if path is not None and not path.exists():
        raise StoreIdentityError(_refusal(url, memory, f"the database file {path} is missing"))
    engine = create_engine(url)
    try:
        found = await read_store_id(engine)
    finally:
        await engine.dispose()
    if found != remembered:
        why = "it has no store id: it is new or was emptied" if found is None else f"its store id is {found}"
        raise StoreIdentityError(_refusal(url, memory, f"{why}, and this proxy last used store {remembered}"))


async def remember_store(url: str, memory: Path) -> str:
    """After migrating: the store's id, remembered for `url` in `memory` (best effort: a read-only config dir only
    loses the protection, with a warning)."""
    engine = create_engine(url)
    try:
        store_id = await read_store_id(engine)
    finally:
        await engine.dispose()
    if store_id is None:
        raise StoreIdentityError("the store has no store id after migrating: run `haimaker db upgrade` and retry")
    if is_memory(url):
        return store_id
    known = _read_memory(memory)
    key = store_key(url)
    if known.get(key) != store_id:
        known[key] = store_id
        try:
            _write_memory(memory, known)
        except OSError as exc:
            logger.warning("cannot remember the store id in %s (%s): a lost store would not be detected", memory, exc)
    return store_id


def _refusal(url: str, memory: Path, why: str) -> str:
    return (
        f"refusing to start: the database {store_key(url)} is not the store this proxy used before ({why}). "
        "It was deleted, replaced or emptied; starting would begin every customer's spend again at 0. Restore it "
        f"(or point database_url at it), or, to start with a new store on purpose, delete {memory} and start again."
    )


def _read_memory(memory: Path) -> dict[str, str]:
    try:
        data = orjson.loads(memory.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        raise StoreIdentityError(f"cannot read {memory} ({exc}); fix or delete it") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise StoreIdentityError(f"{memory} is not a store-id file; fix or delete it")
    return {str(key): value for key, value in data.items()}


def _write_memory(memory: Path, known: dict[str, str]) -> None:
    # Write then rename: processes starting together never read a half-written file.
    partial = memory.with_name(f".{memory.name}.{os.getpid()}.tmp")
    partial.write_bytes(orjson.dumps(known, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    os.replace(partial, memory)
