"""`load_config`: YAML, `os.environ/NAME` references, environment fallbacks, warnings, and every problem at once.

Guards a LiteLLM config that silently loses a setting (an unknown key dropped without a word), a secret
reference left unresolved, a master key from the environment ignored, and `config check` making the user
fix problems one run at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from haimaker.config.loader import ConfigError, load_config
from tests.support.fakes.bedrock import isolate_aws_environment


def _write(tmp_path: Path, config: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config), encoding="utf-8")
    return path


def _problems(tmp_path: Path, config: Any, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(_write(tmp_path, config), env=env or {})
    return raised.value.problems


OPENAI_ENTRY = {
    "model_name": "gpt-4o",
    "litellm_params": {"model": "openai/gpt-4o", "api_key": "os.environ/OPENAI_KEY"},
}


# ---- os.environ/ references ------------------------------------------------------------------------------


def test_environ_references_resolve_anywhere_in_the_file(tmp_path: Path) -> None:
    config = {
        "model_list": [OPENAI_ENTRY],
        "general_settings": {"master_key": "os.environ/PROXY_KEY", "database_url": "os.environ/DB"},
        "router_settings": {"redis_host": "os.environ/REDIS_HOST"},
    }
    env = {"OPENAI_KEY": "sk-openai", "PROXY_KEY": "sk-proxy", "DB": "sqlite:///x.db", "REDIS_HOST": "cache"}
    settings = load_config(_write(tmp_path, config), env=env)

    assert settings.config.model_list[0].litellm_params.api_key == "sk-openai"
    assert settings.master_key == "sk-proxy"
    assert settings.database_url == "sqlite:///x.db"
    assert settings.redis_url == "redis://cache:6379/0"


def test_environment_variables_section_feeds_environ_references(tmp_path: Path) -> None:
    config = {"model_list": [OPENAI_ENTRY], "environment_variables": {"OPENAI_KEY": "sk-from-section"}}
    settings = load_config(_write(tmp_path, config), env={})
    assert settings.config.model_list[0].litellm_params.api_key == "sk-from-section"


def test_unset_environ_reference_is_a_problem_with_its_yaml_path(tmp_path: Path) -> None:
    problems = _problems(tmp_path, {"model_list": [OPENAI_ENTRY]})
    assert problems == ["model_list[0].litellm_params.api_key: environment variable OPENAI_KEY is not set"]


def test_environ_reference_value_is_not_echoed_in_problems(tmp_path: Path) -> None:
    config = {"model_list": [{"model_name": "m", "litellm_params": {"model": "os.environ/MODEL"}}]}
    problems = _problems(tmp_path, config, env={"MODEL": "sk-secret-looking-value"})
    assert problems
    assert not any("sk-secret-looking-value" in p for p in problems)


# ---- master key from the environment ------------------------------------------------------------------------


@pytest.mark.parametrize("variable", ["LITELLM_MASTER_KEY", "HAIMAKER_MASTER_KEY"])
def test_master_key_comes_from_environment_when_config_has_none(tmp_path: Path, variable: str) -> None:
    settings = load_config(_write(tmp_path, {"model_list": []}), env={variable: "sk-env"})
    assert settings.master_key == "sk-env"


def test_config_master_key_wins_over_environment(tmp_path: Path) -> None:
    config = {"general_settings": {"master_key": "sk-config"}}
    env = {"LITELLM_MASTER_KEY": "sk-litellm", "HAIMAKER_MASTER_KEY": "sk-haimaker"}
    assert load_config(_write(tmp_path, config), env=env).master_key == "sk-config"


def test_haimaker_master_key_wins_over_litellm_master_key(tmp_path: Path) -> None:
    env = {"LITELLM_MASTER_KEY": "sk-litellm", "HAIMAKER_MASTER_KEY": "sk-haimaker"}
    assert load_config(_write(tmp_path, {}), env=env).master_key == "sk-haimaker"


def test_no_master_key_anywhere_is_none(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, {}), env={}).master_key is None


def test_database_and_redis_urls_fall_back_to_environment(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgresql://u@h/db", "REDIS_URL": "redis://r:6379/1"}
    settings = load_config(_write(tmp_path, {}), env=env)
    assert (settings.database_url, settings.redis_url) == ("postgresql://u@h/db", "redis://r:6379/1")


# ---- unknown keys ----------------------------------------------------------------------------------------


def test_unknown_keys_are_listed_as_warnings_with_their_paths(tmp_path: Path) -> None:
    config = {
        "model_list": [
            {
                "model_name": "m",
                "litellm_params": {"model": "mock/m", "use_in_pass_through": True},
                "model_info": {"supports_vision": True},
            }
        ],
        "litellm_settings": {"success_callback": ["langfuse"]},
        "general_settings": {"store_model_in_db": True},
        "mcp_servers": {},
    }
    settings = load_config(_write(tmp_path, config), env={})

    keys = sorted(w.rsplit(": ", 1)[-1] for w in settings.warnings)
    assert keys == [
        "general_settings.store_model_in_db",
        "litellm_settings.success_callback",
        "mcp_servers",
        "model_list[0].litellm_params.use_in_pass_through",
        "model_list[0].model_info.supports_vision",
    ]
    assert all("not supported" in w for w in settings.warnings)


def test_known_keys_give_no_warning(tmp_path: Path) -> None:
    config = {
        "model_list": [{"model_name": "m", "litellm_params": {"model": "mock/m", "mock_latency_ms": 5}}],
        "general_settings": {"master_key": "sk-x", "proxy_batch_write_at": 1},
        "litellm_settings": {"num_retries": 1, "drop_params": True},
        "router_settings": {"routing_strategy": "simple-shuffle"},
    }
    assert load_config(_write(tmp_path, config), env={}).warnings == ()


# ---- invalid values: every problem, with its path --------------------------------------------------------


def test_every_invalid_value_is_reported_at_once_with_its_yaml_path(tmp_path: Path) -> None:
    config = {
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "gpt-4", "timeout": -1}},
            {"model_name": "", "litellm_params": {"model": "sagemaker/claude"}},
            {"model_name": "az", "litellm_params": {"model": "azure/dep"}},
            {"model_name": "no-params"},
        ],
        "general_settings": {"master_key": "os.environ/NOPE", "proxy_batch_write_at": 0},
        "litellm_settings": {"budget_exceeded_status_code": 200, "num_retries": "many"},
        "router_settings": {"routing_strategy": "random"},
    }
    problems = _problems(tmp_path, config)
    paths = sorted(p.split(": ", 1)[0] for p in problems)

    assert paths == sorted(
        [
            "general_settings.master_key",
            "general_settings.proxy_batch_write_at",
            "litellm_settings.budget_exceeded_status_code",
            "litellm_settings.num_retries",
            "model_list[0].litellm_params.model",
            "model_list[0].litellm_params.timeout",
            "model_list[1].model_name",
            "model_list[1].litellm_params.model",
            "model_list[2].litellm_params.api_base",
            "model_list[3].litellm_params",
            "router_settings.routing_strategy",
        ]
    )
    assert any("sagemaker" in p and "not supported" in p for p in problems)


@pytest.mark.parametrize("value", [True, False, "False", "ca.pem"], ids=["true", "false", "env-style", "bundle"])
def test_litellm_settings_ssl_verify_takes_a_flag_or_an_existing_ca_bundle(tmp_path: Path, value: bool | str) -> None:
    (tmp_path / "ca.pem").write_text("a bundle")
    if value == "ca.pem":
        value = str(tmp_path / "ca.pem")
    settings = load_config(_write(tmp_path, {"litellm_settings": {"ssl_verify": value}}), env={})
    assert settings.config.litellm_settings.ssl_verify == value
    assert settings.warnings == ()  # a known key, not an unsupported extra


def test_a_litellm_settings_ca_bundle_that_does_not_exist_is_a_problem_with_its_path(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, {"litellm_settings": {"ssl_verify": str(tmp_path / "missing.pem")}})
    assert (
        problem.startswith("litellm_settings.ssl_verify: ") and "missing.pem" in problem and "does not exist" in problem
    )


def test_config_error_text_lists_each_problem_on_its_own_line(tmp_path: Path) -> None:
    config = {"litellm_settings": {"num_retries": -1}, "router_settings": {"timeout": 0}}
    with pytest.raises(ConfigError) as raised:
        load_config(_write(tmp_path, config), env={})
    lines = str(raised.value).splitlines()
    assert lines[0] == "invalid config:"
    assert {line.strip().split(":")[0] for line in lines[1:]} == {
        "- litellm_settings.num_retries",
        "- router_settings.timeout",
    }


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("model_list: [\n  - bad", "not valid YAML"),
        ("- just\n- a list\n", "(root)"),
        ("model_list: 5\n", "model_list"),
        ("general_settings: []\n", "general_settings"),
    ],
)
def test_unusable_files_are_config_errors(tmp_path: Path, text: str, fragment: str) -> None:
    problems = _problems(tmp_path, text)
    assert any(fragment in p for p in problems), problems


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(tmp_path / "absent.yaml", env={})
    assert "file not found" in raised.value.problems[0]


def test_empty_file_and_no_file_give_an_empty_config(tmp_path: Path) -> None:
    empty = load_config(_write(tmp_path, ""), env={})
    none = load_config(None, env={})
    assert empty.config.model_list == none.config.model_list == []
    assert empty.config_dir == tmp_path.resolve()


def test_a_bedrock_deployment_without_a_region_names_aws_region_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_aws_environment(monkeypatch, tmp_path)
    config: dict[str, Any] = {
        "model_list": [{"model_name": "c", "litellm_params": {"model": "bedrock/anthropic.claude-v2:1"}}]
    }
    problems = _problems(tmp_path, config)
    assert [p.split(": ", 1)[0] for p in problems] == ["model_list[0].litellm_params.aws_region_name"]
    config["model_list"][0]["litellm_params"]["aws_region_name"] = "us-east-1"
    assert (
        load_config(_write(tmp_path, config), env={}).config.model_list[0].litellm_params.model.startswith("bedrock/")
    )


def test_a_section_with_only_comments_reads_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "model_list:\n  - model_name: m\n    litellm_params: {model: openai/gpt-4o, api_key: x}\n"
        "router_settings:\n  # routing_strategy: simple-shuffle\nlitellm_settings:\ngeneral_settings:\n"
    )
    settings = load_config(path, env={})
    assert settings.config.router_settings.routing_strategy in (None, "simple-shuffle")  # the default either way
    assert settings.config.litellm_settings.max_end_user_budget_id is None
