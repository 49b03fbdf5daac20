"""`litellm_settings.default_end_user_budget`: the default end-user budget declared in the config (issue 12).

Guards a declaration that is accepted with a typo'd field (and silently declares nothing), money that the store
cannot hold or that is negative, a duration POST /budget/new would refuse, and a declaration without the id it is
created under.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from haimaker.config.loader import ConfigError, load_config


def _write(tmp_path: Path, litellm_settings: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"litellm_settings": litellm_settings}), encoding="utf-8")
    return path


def _problems(tmp_path: Path, litellm_settings: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_config(_write(tmp_path, litellm_settings), env={})
    return raised.value.problems


def test_a_declared_default_budget_is_read_with_every_field(tmp_path: Path) -> None:
    declared = {
        "max_budget": 10.5,
        "soft_budget": 8,
        "rpm_limit": 60,
        "tpm_limit": 100_000,
        "max_parallel_requests": 4,
        "budget_duration": "30d",
    }
    settings = load_config(
        _write(tmp_path, {"max_end_user_budget_id": "free-tier", "default_end_user_budget": declared}), env={}
    )

    budget = settings.config.litellm_settings.default_end_user_budget
    assert budget is not None
    assert budget.max_budget == Decimal("10.5") and budget.soft_budget == Decimal(8)
    assert (budget.rpm_limit, budget.tpm_limit, budget.max_parallel_requests) == (60, 100_000, 4)
    assert budget.budget_duration == "30d"
    assert not settings.warnings, "a haimaker key, known: no 'not supported' warning"


def test_no_declaration_is_none(tmp_path: Path) -> None:
    settings = load_config(_write(tmp_path, {"max_end_user_budget_id": "free-tier"}), env={})
    assert settings.config.litellm_settings.default_end_user_budget is None


def test_a_declaration_without_the_budget_id_is_a_problem(tmp_path: Path) -> None:
    problems = _problems(tmp_path, {"default_end_user_budget": {"max_budget": 1}})
    assert problems == [
        "litellm_settings.default_end_user_budget: declares the default budget, but "
        "litellm_settings.max_end_user_budget_id (the id it is created under) is not set"
    ]


@pytest.mark.parametrize(
    ("field", "value", "path"),
    [
        ("max_budget", -1, "litellm_settings.default_end_user_budget.max_budget"),
        ("max_budget", 2_000_000_000, "litellm_settings.default_end_user_budget.max_budget"),
        ("max_budget", ".nan", "litellm_settings.default_end_user_budget.max_budget"),
        ("soft_budget", "lots", "litellm_settings.default_end_user_budget.soft_budget"),
        ("rpm_limit", -5, "litellm_settings.default_end_user_budget.rpm_limit"),
        ("tpm_limit", 1.5, "litellm_settings.default_end_user_budget.tpm_limit"),
        ("budget_duration", "3 weeks", "litellm_settings.default_end_user_budget.budget_duration"),
        ("budget_duration", "2mo", "litellm_settings.default_end_user_budget.budget_duration"),
        ("max_budet", 5, "litellm_settings.default_end_user_budget.max_budet"),
    ],
)
def test_an_invalid_field_is_a_problem_with_its_yaml_path(tmp_path: Path, field: str, value: Any, path: str) -> None:
    raw = float("nan") if value == ".nan" else value
    problems = _problems(tmp_path, {"max_end_user_budget_id": "free-tier", "default_end_user_budget": {field: raw}})

    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{path}: "), problems


def test_a_bad_duration_says_what_is_accepted(tmp_path: Path) -> None:
    [problem] = _problems(
        tmp_path, {"max_end_user_budget_id": "b", "default_end_user_budget": {"budget_duration": "soon"}}
    )
    assert "Invalid budget_duration 'soon'" in problem
