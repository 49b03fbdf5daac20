"""The spend-log retention keys of `general_settings` (LiteLLM's names and meaning) and `periods.parse_age`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from haimaker.config.loader import ConfigError, load_config
from haimaker.periods import parse_age


def _general(tmp_path: Path, **general: Any) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"model_list": [], "general_settings": general}), encoding="utf-8")
    return load_config(path, env={}).config.general_settings


def test_retention_is_off_by_default_and_runs_daily_once_set(tmp_path: Path) -> None:
    general = _general(tmp_path)
    assert (general.maximum_spend_logs_retention_period, general.maximum_spend_logs_retention_interval) == (None, "1d")


def test_an_integer_retention_counts_days_as_litellm_does(tmp_path: Path) -> None:
    general = _general(tmp_path, maximum_spend_logs_retention_period=30, maximum_spend_logs_retention_interval="6h")
    assert general.maximum_spend_logs_retention_period == "30d"
    assert parse_age(general.maximum_spend_logs_retention_period) == timedelta(days=30)
    assert parse_age(general.maximum_spend_logs_retention_interval) == timedelta(hours=6)


@pytest.mark.parametrize("bad", ["0d", "soon", "-5d", "99999999999999999999999mo", "0mo"])
def test_a_bad_retention_stops_start_up_with_its_path(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError) as raised:
        _general(tmp_path, maximum_spend_logs_retention_period=bad)
    assert any("maximum_spend_logs_retention_period" in problem for problem in raised.value.problems)


def test_parse_age_reads_the_duration_grammar_with_any_number_of_months() -> None:
    assert parse_age("12h") == timedelta(hours=12)
    assert parse_age("2w") == timedelta(weeks=2)
    assert parse_age("6mo") == timedelta(days=180)
    assert parse_age("1mo") == timedelta(days=30)
    assert parse_age("daily") == timedelta(days=1)
    with pytest.raises(ValueError, match="invalid duration"):
        parse_age("1300mo")  # past MAX_DURATION_DAYS
