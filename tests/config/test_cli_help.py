"""`haimaker --help` and its commands' help show every option name whole, whatever the terminal's width.

Regression for issue 14: rich's help boxes shortened names to fit (`--detailed_deb…`, `--num_workers,…` at 80
columns), and a name is what the reader copies.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
import typer

from haimaker.cli import app

COMMANDS = ((), ("config", "check"), ("db", "upgrade"), ("import-litellm",))


def _option_names(path: tuple[str, ...]) -> list[str]:
    command: Any = typer.main.get_command(app)  # typer's own copy of click's classes
    for name in path:
        command = command.commands[name]
    return [opt for param in command.params for opt in param.opts if opt.startswith("--")]


@pytest.mark.parametrize("columns", [60, 80, 120])
@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "haimaker")
def test_help_shows_every_option_name_whole(path: tuple[str, ...], columns: int) -> None:
    env = {**os.environ, "COLUMNS": str(columns), "TERM": "xterm-256color"}
    result = subprocess.run(
        [sys.executable, "-m", "haimaker", *path, "--help"], capture_output=True, text=True, env=env, timeout=60
    )

    assert result.returncode == 0, result.stderr
    names = [*_option_names(path), "--help"]
    for name in names:
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", result.stdout), (name, result.stdout)
    assert "…" not in result.stdout


def test_the_main_help_names_the_long_options_and_says_what_they_do() -> None:
    names = _option_names(())
    assert {"--detailed_debug", "--detailed-debug", "--num_workers", "--num-workers", "--config"} <= set(names)
    result = subprocess.run([sys.executable, "-m", "haimaker", "--help"], capture_output=True, text=True, timeout=60)
    assert "access log" in result.stdout and "Redis" in result.stdout
