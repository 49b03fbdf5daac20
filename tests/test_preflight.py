"""How a start-up failure is told (`preflight.describe_failure`): one line naming what failed, never a password,
whatever the driver put in its message; and `db upgrade` ends on that line rather than a traceback."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import yaml

from haimaker.config.loader import ConfigError, Settings, load_config
from haimaker.preflight import StartupError, describe_failure


def _settings(tmp_path: Path, **general: str) -> Settings:
    path = tmp_path / "config.yaml"
    model = {"model_name": "a", "litellm_params": {"model": "mock/a"}}
    path.write_text(yaml.safe_dump({"model_list": [model], "general_settings": general}))
    return load_config(path, env={})


def test_a_driver_message_carrying_the_password_is_scrubbed(tmp_path: Path) -> None:
    settings = _settings(tmp_path, database_url="postgresql://app:p%40ss@db.internal:5433/billing")
    try:
        raise OSError("connect to postgresql://app:p@ss@db.internal failed")
    except OSError as exc:
        line = describe_failure(exc, settings)

    assert "p@ss" not in line and "p%40ss" not in line
    assert line == "OSError: connect to postgresql://app:***@db.internal failed"


def test_config_and_startup_errors_are_told_as_they_are(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    assert describe_failure(ConfigError(["a.b: wrong", "c: missing"]), settings) == "a.b: wrong; c: missing"
    assert describe_failure(StartupError("the journal is full"), settings) == "the journal is full"


def test_a_store_error_names_the_store(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    line = describe_failure(sqlite3.OperationalError("disk I/O error"), settings)
    assert line == f"store (SQLite {tmp_path / 'haimaker.db'}): disk I/O error"


def test_db_upgrade_on_an_unreachable_store_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"general_settings": {"database_url": "postgresql://u:sekrit-pw@127.0.0.1:1/x"}}))
    result = subprocess.run(
        [sys.executable, "-m", "haimaker", "db", "upgrade", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "error: cannot open the store (PostgreSQL 127.0.0.1:1/x): connection refused"
    assert "sekrit" not in result.stdout + result.stderr
