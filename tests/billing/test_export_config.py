"""`general_settings.usage_export`: what each sink type needs, refused at load with its YAML path; secrets redacted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from haimaker.billing.exporter import backoff_s
from haimaker.config.loader import ConfigError, load_config
from haimaker.config.usage_export import UsageExportSink
from haimaker.providers.redaction import Redactor


def _load(tmp_path: Path, sinks: list[dict[str, Any]], env: dict[str, str] | None = None) -> Any:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"general_settings": {"usage_export": sinks}}))
    return load_config(path, env=env or {})


@pytest.mark.parametrize(
    ("sink", "problem"),
    [
        ({"name": "s", "type": "stripe", "event_name": "e"}, "needs api_key"),
        ({"name": "s", "type": "stripe", "api_key": "sk_test_x"}, "needs event_name"),
        ({"name": "l", "type": "lago", "api_key": "k"}, "billable metric's code"),
        ({"name": "w", "type": "webhook", "api_base": "https://x.example/hook"}, "signing_secret"),
        ({"name": "o", "type": "openmeter", "api_base": "ftp://x"}, "http:// or https://"),
        ({"name": "o", "type": "paddle"}, "usage_export[0].type"),
        ({"name": "o", "type": "openmeter", "batch_size": 500}, "batch_size"),
    ],
)
def test_a_sink_missing_what_its_type_needs_is_refused(tmp_path: Path, sink: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, [sink])
    assert problem in str(caught.value)


def test_sink_names_are_unique(tmp_path: Path) -> None:
    sink = {"name": "om", "type": "openmeter"}
    with pytest.raises(ConfigError, match="unique: om"):
        _load(tmp_path, [sink, sink])


def test_secrets_come_from_the_environment_and_are_redacted(tmp_path: Path) -> None:
    secret = "sk_live_51EnvironmentSecretValue0123456789"
    sink = {"name": "s", "type": "stripe", "api_key": "os.environ/STRIPE_KEY", "event_name": "llm_spend"}
    settings = _load(tmp_path, [sink], env={"STRIPE_KEY": secret})
    [loaded] = settings.config.general_settings.usage_export
    assert loaded.api_key == secret and loaded.base_url == "https://api.stripe.com"
    assert secret not in Redactor.from_settings(settings).text(f"failed with {secret}")


def test_backoff_doubles_within_jitter_and_stops_at_the_cap() -> None:
    sink = UsageExportSink(name="o", type="openmeter", retry_backoff_s=1, max_backoff_s=8)
    assert [backoff_s(sink, n, rand=lambda: 1.0) for n in (1, 2, 3, 4, 5, 9)] == [1, 2, 4, 8, 8, 8]
    assert [backoff_s(sink, n, rand=lambda: 0.0) for n in (1, 2, 3)] == [0.5, 1, 2]
