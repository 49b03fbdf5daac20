"""Every way `haimaker` can fail to start ends the same way: one message on stderr saying what failed and where, a
non-zero exit code, no traceback, no password, and none of the servers' own `startup failed` lines.

Regression for issue 14: an unreachable or missing PostgreSQL database, a SQLite file in a missing directory or
an unusable journal directory ended in a framework traceback and `ERROR: Application startup failed. Exiting.`
Failures the CLI checks before any server starts (`preflight.py`) are the same under uvicorn and granian; those
only the lifespan can meet are run under both.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from haimaker.storage.engine import normalize_database_url, upgrade
from tests.support.databases import temporary_database
from tests.support.process import free_port
from tests.support.proxy import base_config

SERVERS = ("uvicorn", "granian")
FRAMEWORK_NOISE = ("Traceback", "Application startup failed", "ASGI lifespan startup failed", "Exception in")


def _serve(tmp_path: Path, config: dict[str, Any] | str, *args: str, env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    clean = {k: v for k, v in os.environ.items() if not k.endswith("MASTER_KEY") and k != "DATABASE_URL"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "haimaker",
            "--config",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(free_port()),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={**clean, **(env or {})},
        check=False,
        cwd=tmp_path,
    )


def _assert_one_message(result: Any, message: str, *, code: int = 1) -> None:
    """Exactly one line on stderr, the expected one; nothing of a framework anywhere."""
    assert result.returncode == code, (result.returncode, result.stderr, result.stdout)
    assert result.stderr.strip().splitlines() == [message], result.stderr
    for noise in FRAMEWORK_NOISE:
        assert noise not in result.stderr + result.stdout


def _with_store(url: str, **general: Any) -> dict[str, Any]:
    return base_config(general_settings={"database_url": url, **general})


@pytest.mark.parametrize("server", SERVERS)
def test_an_unreachable_postgresql_names_host_and_database_never_the_password(tmp_path: Path, server: str) -> None:
    url = "postgresql://haimaker:hunter2-secret@127.0.0.1:1/billing"
    result = _serve(tmp_path, _with_store(url), "--server", server)

    _assert_one_message(result, "error: cannot open the store (PostgreSQL 127.0.0.1:1/billing): connection refused")
    assert "hunter2" not in result.stderr + result.stdout


@pytest.mark.postgres
def test_a_missing_postgresql_database_is_named(tmp_path: Path) -> None:
    result = _serve(tmp_path, _with_store("postgresql://postgres:pw-never-shown@127.0.0.1:5432/no_such_db_t5"))

    _assert_one_message(
        result,
        "error: cannot open the store (PostgreSQL 127.0.0.1:5432/no_such_db_t5): "
        'database "no_such_db_t5" does not exist',
    )
    assert "pw-never-shown" not in result.stderr


@pytest.mark.postgres
def test_a_refused_postgresql_user_is_named_without_its_password(tmp_path: Path) -> None:
    result = _serve(tmp_path, _with_store("postgresql://no_such_role_t5:pw-never-shown@127.0.0.1:5432/test"))

    _assert_one_message(
        result, 'error: cannot open the store (PostgreSQL 127.0.0.1:5432/test): role "no_such_role_t5" does not exist'
    )
    assert "pw-never-shown" not in result.stderr


def test_a_sqlite_store_in_a_missing_directory_is_refused_before_anything_is_created(tmp_path: Path) -> None:
    store = tmp_path / "missing" / "dir" / "haimaker.db"
    result = _serve(tmp_path, _with_store(f"sqlite:///{store}"))

    _assert_one_message(result, f"error: database_url: the directory of the SQLite store {store} does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_sqlite_store_in_a_read_only_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "read-only"
    directory.mkdir()
    directory.chmod(0o555)
    try:
        result = _serve(tmp_path, _with_store(f"sqlite:///{directory / 'haimaker.db'}"))
    finally:
        directory.chmod(0o755)
    _assert_one_message(
        result,
        f"error: database_url: the directory of the SQLite store {directory / 'haimaker.db'} is not writable "
        "by this user",
    )


def test_an_unusable_journal_directory_is_named(tmp_path: Path) -> None:
    (tmp_path / "journal").write_text("a file, not a directory")
    result = _serve(tmp_path, base_config(general_settings={"spend_journal_dir": "journal"}))

    _assert_one_message(
        result, f"error: general_settings.spend_journal_dir: cannot create {tmp_path / 'journal'}: File exists"
    )


def test_an_unset_environment_reference_for_the_master_key_is_named(tmp_path: Path) -> None:
    config = base_config(general_settings={"master_key": "os.environ/HAIMAKER_T5_UNSET_KEY"})
    result = _serve(tmp_path, config)

    assert result.returncode == 2
    assert "general_settings.master_key: environment variable HAIMAKER_T5_UNSET_KEY is not set" in result.stderr
    assert not any(noise in result.stderr for noise in FRAMEWORK_NOISE)


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    result = _serve(tmp_path, "model_list:\n  - model_name: a\n   litellm_params: {model: mock/a}\n")

    assert result.returncode == 2
    problem = result.stderr.strip().splitlines()[-1]
    assert problem.startswith(f"  - {tmp_path / 'config.yaml'}: line 3, column 4: not valid YAML: expected <block end>")
    assert "<unicode string>" not in result.stderr and "Traceback" not in result.stderr


def test_a_missing_ca_bundle_is_a_config_error(tmp_path: Path) -> None:
    config = base_config(litellm_settings={"ssl_verify": str(tmp_path / "missing-ca.pem")})
    result = _serve(tmp_path, config)

    assert result.returncode == 2
    assert f"litellm_settings.ssl_verify: Value error, CA bundle '{tmp_path / 'missing-ca.pem'}'" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("server", SERVERS)
async def test_a_failure_only_the_lifespan_meets_is_one_line_under_each_server(tmp_path: Path, server: str) -> None:
    """A store that is reachable but damaged (a table dropped at the head revision) passes the CLI's checks and
    fails while the lifespan loads it: one ERROR line of ours, without the server's traceback."""
    async with temporary_database("postgres", tmp_path) as url:
        await upgrade(normalize_database_url(url, config_dir=tmp_path))
        engine = create_async_engine(normalize_database_url(url, config_dir=tmp_path), poolclass=NullPool)
        async with engine.begin() as connection:
            await connection.execute(text("DROP TABLE virtual_keys"))
        await engine.dispose()
        result = _serve(tmp_path, _with_store(url), "--server", server)

    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith(
        "start-up failed: store (PostgreSQL 127.0.0.1:5432/" + url.rsplit("/", 1)[-1] + "): "
        'relation "virtual_keys" does not exist'
    ), errors
    for noise in FRAMEWORK_NOISE:
        assert noise not in result.stderr + result.stdout, result.stderr + result.stdout
