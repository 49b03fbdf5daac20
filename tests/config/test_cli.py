"""The `haimaker` command as users run it: a real subprocess, its exit code and what it prints.

Guards `config check` passing a broken file (or failing a good one), problems hidden behind a traceback,
and an entry point that does not start at all (`python -m haimaker`).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

GOOD_CONFIG: dict[str, Any] = {
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
        {"model_name": "b", "litellm_params": {"model": "acme/claude"}},
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
    assert "config OK: 3 deployments, 2 models: gpt-4o, local" in result.stdout
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


def test_version_prints_the_version() -> None:
    from haimaker import __version__

    result = _run("--version")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"haimaker {__version__}"


def test_a_port_outside_1_to_65535_is_refused(tmp_path: Path) -> None:
    config = str(_write(tmp_path, {"model_list": GOOD_CONFIG["model_list"][2:]}))
    for port in ("99999", "0"):
        result = _run("--config", config, "--port", port)
        assert result.returncode == 2
        assert "Invalid value for '--port'" in result.stderr, result.stderr
    result = _run("--config", config, env={"PORT": "99999"})
    assert result.returncode == 2 and "PORT='99999' is not a port (1-65535)" in result.stderr
    assert not (tmp_path / "haimaker.db").exists()


def test_no_config_and_no_models_says_what_it_needs_and_serves_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "haimaker", "--port", "1"], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )

    assert result.returncode == 2
    assert "nothing to serve: no --config given" in result.stderr
    assert "model_list:" in result.stderr and "Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # no haimaker.db, no store-id in the current directory


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    config = str(_write(tmp_path, {"model_list": GOOD_CONFIG["model_list"][2:]}))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for server in ("uvicorn", "granian"):
            result = _run("--config", config, "--host", "127.0.0.1", "--port", str(port), "--server", server)
            assert result.returncode == 1
            assert result.stderr.strip().splitlines()[-1] == (
                f"error: 127.0.0.1:{port} is already in use; choose another with --port"
            )
            assert "Traceback" not in result.stderr


def test_config_check_refuses_an_empty_config_and_counts_in_the_singular(tmp_path: Path) -> None:
    empty = _run("config", "check", "--config", str(_write(tmp_path, {"general_settings": {}})))
    assert empty.returncode == 2 and "no models configured" in empty.stderr

    one = _run("config", "check", "--config", str(_write(tmp_path, {"model_list": GOOD_CONFIG["model_list"][2:]})))
    assert one.returncode == 0, one.stderr
    assert "config OK: 1 deployment, 1 model: local" in one.stdout


def test_start_up_says_where_it_listens_and_shutdown_what_it_wrote(tmp_path: Path) -> None:
    import signal
    import time

    import httpx

    config = _write(
        tmp_path,
        {"model_list": GOOD_CONFIG["model_list"][2:], "general_settings": {"master_key": "sk-start-up-line-test"}},
    )
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    clean = {k: v for k, v in os.environ.items() if not k.endswith("MASTER_KEY") and k != "DATABASE_URL"}
    process = subprocess.Popen(
        [sys.executable, "-m", "haimaker", "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        stderr=subprocess.PIPE,
        text=True,
        env=clean,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            lines.append(line)
            if " ready " in line or not line:
                break
        ready = lines[-1]
        assert f"ready on http://127.0.0.1:{port} (UI http://127.0.0.1:{port}/ui)" in ready, lines
        assert f"store: SQLite {tmp_path / 'haimaker.db'}" in ready
        assert "Redis: none" in ready and "1 model (1 deployment)" in ready and "default budget: none" in ready
        assert not any("alembic" in line or "Running upgrade" in line for line in lines), lines
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json={"model": "local", "messages": [{"role": "user", "content": "hi"}], "user": "c1"},
            headers={"Authorization": "Bearer sk-start-up-line-test"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "haimaker stopped; 1 spend record written this run" in rest, rest


def test_config_check_names_the_key_a_typo_meant_and_refuses_a_misspelled_store(tmp_path: Path) -> None:
    model = {"model_name": "local", "litellm_params": {"model": "mock/local", "timout": 30}}
    warned = _run("config", "check", "--config", str(_write(tmp_path, {"model_list": [model]})))
    assert warned.returncode == 0, warned.stderr
    assert "model_list[0].litellm_params.timout: unknown key (ignored); did you mean `timeout`?" in warned.stdout

    misspelled = {"model_list": [model], "general_settings": {"databse_url": "postgresql://db.internal/app"}}
    refused = _run("config", "check", "--config", str(_write(tmp_path, misspelled)))
    assert refused.returncode == 2
    assert "general_settings.databse_url: unknown key; did you mean `database_url`?" in refused.stderr
    # Serving refuses it too, before anything is created beside the config.
    served = _run("--config", str(tmp_path / "config.yaml"), "--port", "1")
    assert served.returncode == 2 and "did you mean `database_url`?" in served.stderr
    assert not (tmp_path / "haimaker.db").exists()


def test_a_yaml_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("model_list:\n  - model_name: [unclosed\n")
    result = _run("config", "check", "--config", str(path))
    assert result.returncode == 2 and f"{path}: line 3, column 1: not valid YAML" in result.stderr


def test_a_litellm_config_with_all_four_providers_is_accepted_and_starts(tmp_path: Path) -> None:
    """LiteLLM's own keys for Anthropic, Gemini, Vertex AI and Bedrock load unchanged: `config check` accepts the
    file without a warning about them, and the proxy starts on it and lists every model."""
    import json

    account = {
        "type": "service_account",
        "project_id": "acme-prod",
        "private_key_id": "k1",
        "private_key": "-----BEGIN PRIVATE KEY-----\nunused-in-this-test\n-----END PRIVATE KEY-----\n",
        "client_email": "haimaker@acme-prod.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    (tmp_path / "vertex-sa.json").write_text(json.dumps(account))
    config = {
        "model_list": [
            {
                "model_name": "claude",
                "litellm_params": {"model": "anthropic/claude-3-5-sonnet-20241022", "api_key": "os.environ/AK"},
            },
            {"model_name": "flash", "litellm_params": {"model": "gemini/gemini-2.0-flash", "api_key": "os.environ/GK"}},
            {
                "model_name": "flash",
                "litellm_params": {
                    "model": "vertex_ai/gemini-2.0-flash",
                    "vertex_location": "europe-west4",
                    "vertex_credentials": str(tmp_path / "vertex-sa.json"),
                },
            },
            {
                "model_name": "claude",
                "litellm_params": {
                    "model": "bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0",
                    "aws_region_name": "eu-central-1",
                    "aws_access_key_id": "os.environ/AWS_KEY_ID",
                    "aws_secret_access_key": "os.environ/AWS_SECRET",
                },
            },
        ],
        "general_settings": {"master_key": "sk-four-providers-test"},
        "router_settings": {
            "routing_strategy": "simple-shuffle",
            "num_retries": 2,
            "fallbacks": [{"claude": ["flash"]}],
        },
    }
    path = _write(tmp_path, config)
    env = {"AK": "sk-ant-test-key-0000", "GK": "gemini-test-key-0000", "AWS_KEY_ID": "AKIATEST", "AWS_SECRET": "s3cr3t"}

    checked = _run("config", "check", "--config", str(path), env=env)

    assert checked.returncode == 0, checked.stderr
    assert "config OK: 4 deployments, 2 models: claude, flash" in checked.stdout
    assert "warning" not in checked.stdout, checked.stdout

    import httpx

    from tests.support.proxy import running_proxy

    os.environ.update(env)  # the in-process proxy reads os.environ/ references from the environment
    try:
        with running_proxy(tmp_path, config) as proxy:
            listed = httpx.get(
                f"{proxy.url}/v1/models", headers={"Authorization": "Bearer sk-four-providers-test"}, timeout=30
            )
            assert listed.status_code == 200, listed.text
            assert sorted(m["id"] for m in listed.json()["data"]) == ["claude", "flash"]
    finally:
        for name in env:
            os.environ.pop(name, None)
