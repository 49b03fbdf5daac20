"""The `haimaker` command as users run it: a real subprocess, its exit code and what it prints.

Guards `config check` passing a broken file (or failing a good one), problems hidden behind a traceback,
and an entry point that does not start at all (`python -m haimaker`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

GOOD_CONFIG = {
    "model_list": [
        {"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_KEY"}},
        {"model_name": "gpt-4o", "litellm_params": {"model": "azure/gpt4o", "api_base": "https://x.openai.azure.com"}},
        {"model_name": "local", "litellm_params": {"model": "mock/local"}},
    ],
    "general_settings": {"master_key": "sk-check"},
    "litellm_settings": {"success_callback": ["langfuse"]},
}
BAD_CONFIG = {
    "model_list": [
        {"model_name": "a", "litellm_params": {"model": "gpt-4", "timeout": -1}},
        {"model_name": "b", "litellm_params": {"model": "bedrock/claude"}},
    ],
    "litellm_settings": {"num_retries": "many"},
}


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("MASTER_KEY") and k != "DATABASE_URL"}
    return subprocess.run(
        [sys.executable, "-m", "haimaker", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, **(env or {})},
        check=False,
    )


def _write(tmp_path: Path, config: object) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_check_accepts_a_good_file_and_summarises_it(tmp_path: Path) -> None:
    result = _run("config", "check", "--config", str(_write(tmp_path, GOOD_CONFIG)), env={"OPENAI_KEY": "sk-o"})

    assert result.returncode == 0, result.stderr
    assert "config OK: 3 deployments, models: gpt-4o, local" in result.stdout
    assert "litellm_settings.success_callback" in result.stdout  # unsupported keys are warned about
    assert "Traceback" not in result.stderr


def test_config_check_prints_every_problem_and_fails(tmp_path: Path) -> None:
    result = _run("config", "check", "--config", str(_write(tmp_path, BAD_CONFIG)))

    assert result.returncode != 0
    output = result.stdout + result.stderr
    for path in (
        "model_list[0].litellm_params.model",
        "model_list[0].litellm_params.timeout",
        "model_list[1].litellm_params.model",
        "litellm_settings.num_retries",
    ):
        assert path in output, output
    assert "Traceback" not in output


def test_config_check_reports_an_unset_environment_reference(tmp_path: Path) -> None:
    result = _run("config", "check", "--config", str(_write(tmp_path, GOOD_CONFIG)))

    assert result.returncode != 0
    assert "model_list[0].litellm_params.api_key: environment variable OPENAI_KEY is not set" in result.stderr


def test_serving_a_bad_config_exits_with_the_problems_not_a_traceback(tmp_path: Path) -> None:
    result = _run("--config", str(_write(tmp_path, BAD_CONFIG)), "--port", "1")

    assert result.returncode != 0
    assert "litellm_settings.num_retries" in result.stderr
    assert "Traceback" not in result.stderr


def test_python_dash_m_haimaker_help_lists_the_commands() -> None:
    result = _run("--help")

    assert result.returncode == 0, result.stderr
    for word in ("--config", "--port", "config", "db"):
        assert word in result.stdout
