"""`sanitize_message`: what an upstream error message may carry out of the process.

Guards the upstream key (or anything shaped like a key or bearer token) reaching a client or a log through
an upstream's error message, and unbounded upstream bodies copied into our errors.
"""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from urllib.parse import quote

import orjson
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from haimaker.config.loader import load_config
from haimaker.providers.http import status_error
from haimaker.providers.redaction import MIN_SECRET_CHARS, REDACTED, RedactingLogRecords, Redactor, sanitize_message


def test_configured_secret_is_removed_whatever_its_shape() -> None:
    azure_key = "0123456789abcdef0123456789abcdef"  # Azure keys are bare hex: no pattern would catch them
    message = f"Access denied for key {azure_key}."
    assert sanitize_message(message, (azure_key,)) == "Access denied for key [REDACTED]."


@pytest.mark.parametrize(
    "secret",
    [
        "sk-proj-AbCdEf0123456789",
        "sk-ant-api03-abcdEFGH1234",
        "sk_live_51Habcdef",
        "rk-test-abcdef1234",
        "api_key-abcdef1234",
        "api-key_abcdef1234",
        "sk-abcd****wxyz",
    ],
)
def test_key_shaped_tokens_are_removed(secret: str) -> None:
    cleaned = sanitize_message(f"Incorrect API key provided: {secret}. See the docs.")
    assert secret not in cleaned
    assert "[REDACTED]" in cleaned
    assert cleaned.startswith("Incorrect API key provided: ")


def test_bearer_tokens_are_removed() -> None:
    cleaned = sanitize_message("header was 'Authorization: Bearer abc.def.ghi' (rejected)")
    assert "abc.def.ghi" not in cleaned


def test_ordinary_text_is_untouched() -> None:
    message = "Invalid 'messages[0].content': string too long. Expected a string with maximum length 10, task-42."
    assert sanitize_message(message) == message


def test_empty_secrets_are_ignored() -> None:
    assert sanitize_message("nothing to hide", ("",)) == "nothing to hide"


def test_long_messages_are_capped() -> None:
    cleaned = sanitize_message("x" * 5000)
    assert len(cleaned) <= 1001
    assert cleaned.endswith("…")


def test_secret_is_removed_before_the_cap_cuts_it_in_half() -> None:
    secret = "0123456789abcdef0123456789abcdef"
    message = "y" * 990 + secret
    cleaned = sanitize_message(message, (secret,))
    assert secret[:10] not in cleaned


# ---- Redactor: every configured secret, by value (issue 10, finding 2) -------------------------------------

SECRETS = ["sk-proj-AbCdEf0123456789xyzXYZ", "0123456789abcdef0123456789abcdef", "correct-horse-battery-staple-42"]


@pytest.mark.parametrize("secret", SECRETS)
def test_a_secret_is_removed_by_value_whatever_its_shape(secret: str) -> None:
    redactor = Redactor(SECRETS)
    assert redactor.text(f"key={secret}; again {secret}.") == "key=[REDACTED]; again [REDACTED]."


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("user", ["", "a", "ab", "admin"])
def test_a_secret_inside_basic_auth_is_removed_whatever_the_user_name(secret: str, user: str) -> None:
    header = "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()
    cleaned = Redactor(SECRETS).text(f"sent Authorization: {header} upstream")
    assert header not in cleaned
    assert "[REDACTED]" in cleaned
    left = cleaned.removeprefix("sent Authorization: Basic ").partition("[REDACTED]")
    assert len(left[0]) <= 8 and len(left[2].removesuffix(" upstream")) <= 4, "only the user name's bytes remain"


def test_url_encoded_and_json_escaped_forms_are_removed() -> None:
    secret = 'p@ss/w:rd"with\\odd'
    redactor = Redactor([secret])
    assert quote(secret, safe="") not in redactor.text(f"redis://:{quote(secret, safe='')}@host:6379/0")
    escaped = orjson.dumps(secret).decode()[1:-1]
    assert escaped.encode() not in redactor.bytes(orjson.dumps({"echo": secret}))


@pytest.mark.parametrize("secret", SECRETS)
def test_a_truncated_echo_of_a_secret_is_removed(secret: str) -> None:
    cleaned = Redactor(SECRETS).text(f"Invalid key '{secret[:14]}...' and '...{secret[-13:]}'")
    assert secret[:14] not in cleaned
    assert secret[-13:] not in cleaned
    assert cleaned.count("[REDACTED]") == 2


def test_short_fragments_and_ordinary_text_are_untouched() -> None:
    redactor = Redactor(["correct-horse-battery-staple-42"])
    text = "a correct horse; battery low; staple-42 ok"
    assert redactor.text(text) == text


def test_too_short_values_are_not_redacted_by_value() -> None:
    assert Redactor(["abc"]).text("abc abc") == "abc abc"


def test_json_values_are_scrubbed_in_every_string_keys_included() -> None:
    secret = SECRETS[2]
    value = {"error": {"message": secret, "type": [secret], secret: 1, "code": 7}}
    assert Redactor(SECRETS).value(value) == {
        "error": {"message": "[REDACTED]", "type": ["[REDACTED]"], "[REDACTED]": 1, "code": 7}
    }


def test_bytes_are_checked_cheaply_and_scrubbed() -> None:
    redactor = Redactor(SECRETS)
    clean = b'{"choices":[{"message":{"content":"hello"}}]}'
    assert not redactor.contains_secret(clean)
    dirty = b'{"content":"' + SECRETS[1].encode() + b'"}'
    assert redactor.contains_secret(dirty)
    assert orjson.loads(redactor.bytes(dirty)) == {"content": "[REDACTED]"}


@pytest.mark.parametrize("secret", SECRETS)
def test_every_field_of_an_upstream_error_is_scrubbed(secret: str) -> None:
    raw = orjson.dumps({"error": {"message": f"bad {secret}", "type": f"x{secret}", "param": secret, "code": secret}})
    for status in (400, 401, 404, 429):
        error = status_error(status, raw, Redactor([secret]))
        envelope = orjson.dumps(error.envelope())
        assert secret.encode() not in envelope
        assert error.param == "[REDACTED]"
    assert secret not in status_error(503, raw, Redactor([secret])).message
    assert secret not in status_error(400, f"<html>{secret}</html>".encode(), Redactor([secret])).message


def test_log_records_are_scrubbed_in_message_arguments_and_exception(caplog: pytest.LogCaptureFixture) -> None:
    secret = SECRETS[2]
    before = logging.getLogRecordFactory()
    installed = RedactingLogRecords(Redactor(SECRETS))
    try:
        log = logging.getLogger("haimaker.test_redaction")
        with caplog.at_level(logging.INFO):
            log.info("key %s in args", secret)
            log.warning(f"key {secret} in the message")
            try:
                raise ValueError(f"cannot connect with {secret}")
            except ValueError:
                log.exception("failed: %r", {"password": secret})
            logging.getLogger("sqlalchemy.pool").error("url postgresql://u:%s@db/x", secret)
    finally:
        installed.uninstall()
    assert len(caplog.records) == 4
    assert secret not in caplog.text
    assert "[REDACTED]" in caplog.text
    assert "ValueError: cannot connect with [REDACTED]" in caplog.text
    logging.getLogger("haimaker.test_redaction").warning("after %s", secret)
    assert logging.getLogRecordFactory() is before, "uninstall restores the factory"


def test_an_exception_rendered_by_another_apps_redactor_is_scrubbed_again(caplog: pytest.LogCaptureFixture) -> None:
    # Two apps in one process (tests, or a host embedding two): the inner factory renders the traceback with its
    # own secrets first; ours must still scrub that text, not skip it because it is already rendered.
    secret = SECRETS[2]
    other = RedactingLogRecords(Redactor(["some-other-apps-secret-value"]))
    ours = RedactingLogRecords(Redactor(SECRETS))
    try:
        with caplog.at_level(logging.INFO):
            try:
                raise ValueError(f"cannot connect with {secret}")
            except ValueError:
                logging.getLogger("haimaker.test_redaction").exception("failed")
    finally:
        ours.uninstall()
        other.uninstall()
    assert secret not in caplog.text
    assert "ValueError: cannot connect with [REDACTED]" in caplog.text


def test_the_redactor_of_a_config_holds_every_configured_secret(tmp_path: Path) -> None:
    config = {
        "model_list": [
            {"model_name": "a", "litellm_params": {"model": "openai/gpt-4o", "api_key": "sk-upstream-aaaaaaaaaaaa"}},
            {
                "model_name": "b",
                "litellm_params": {"model": "azure/d", "api_base": "https://x", "api_key": "0123456789abcdef" * 2},
            },
        ],
        "general_settings": {
            "master_key": "sk-master-bbbbbbbbbbbb",
            "database_url": "postgresql://app:pg%2Fsecret-cccc@db:5432/app",
            "redis_url": "redis://:redis-secret-dddd@cache:6379/0",
        },
        "router_settings": {"redis_password": "router-redis-eeee"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    redactor = Redactor.from_settings(load_config(path, env={}))
    secrets = ["sk-upstream-aaaaaaaaaaaa", "0123456789abcdef" * 2, "sk-master-bbbbbbbbbbbb", "pg/secret-cccc"]
    secrets += ["redis-secret-dddd", "router-redis-eeee"]
    for secret in secrets:
        assert secret in redactor.secrets
        assert redactor.text(f"x {secret} y") == "x [REDACTED] y"
    assert "pg%2Fsecret-cccc" not in redactor.text("postgresql://app:pg%2Fsecret-cccc@db:5432/app")


def test_the_alert_webhook_url_is_a_secret_when_alerting_uses_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = "https://hooks.example.test/services/T000/B000/XXXXXXXXXXXXXXXXXXXXXXXX"
    monkeypatch.setenv("WEBHOOK_URL", url)
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"general_settings": {"master_key": "sk-master-bbbbbbbbbbbb", "alerting": ["webhook"]}})
    )
    redactor = Redactor.from_settings(load_config(path, env={}))
    assert url not in redactor.text(f"alert post to {url} failed")


def test_provider_credentials_from_the_config_and_the_environment_are_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Credentials a deployment reads from the environment (ANTHROPIC_API_KEY, AWS_SECRET_ACCESS_KEY...) or from
    its own params (a Vertex service account's private key, AWS keys) are scrubbed like `api_key`."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-the-environment-1234")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws/secret+from+the+environment")
    account = {
        "type": "service_account",
        "project_id": "p",
        "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEabcdefghijklmnop\n",
    }
    config = {
        "model_list": [
            {"model_name": "c", "litellm_params": {"model": "anthropic/claude-3-5-sonnet"}},
            {
                "model_name": "b",
                "litellm_params": {
                    "model": "bedrock/x",
                    "aws_region_name": "us-east-1",
                    "aws_secret_access_key": "config-aws-secret-5678",
                },
            },
            {
                "model_name": "v",
                "litellm_params": {"model": "vertex_ai/gemini-2.0-flash", "vertex_credentials": account},
            },
        ],
        "general_settings": {"master_key": "sk-master-bbbbbbbbbbbb"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    redactor = Redactor.from_settings(load_config(path, env={}))
    for secret in (
        "sk-ant-from-the-environment-1234",
        "aws/secret+from+the+environment",
        "config-aws-secret-5678",
        account["private_key"],
    ):
        assert secret not in redactor.text(f"upstream said: {secret}!"), secret


def test_formatters_that_read_the_arguments_still_work(caplog: pytest.LogCaptureFixture) -> None:
    secret = SECRETS[0]
    installed = RedactingLogRecords(Redactor(SECRETS))
    try:
        with caplog.at_level(logging.INFO):
            logging.getLogger("haimaker.test_redaction").info(
                '%s - "%s %s HTTP/%s" %d %r', "127.0.0.1:5000", "POST", f"/v1?key={secret}", "1.1", 200, [secret]
            )
    finally:
        installed.uninstall()
    record = caplog.records[0]
    assert isinstance(record.args, tuple) and len(record.args) == 6, "uvicorn's access formatter unpacks them"
    assert record.args[4] == 200
    assert record.getMessage() == "127.0.0.1:5000 - \"POST /v1?key=[REDACTED] HTTP/1.1\" 200 ['[REDACTED]']"


_SECRET_CHARS = st.characters(codec="utf-8")  # no lone surrogates: a secret is valid text


@given(
    # A "secret" inside the marker itself ("[REDAC") is found again in every redacted text: not a real secret.
    secret=st.text(_SECRET_CHARS, min_size=MIN_SECRET_CHARS, max_size=64).filter(
        lambda s: s.strip() == s and s not in REDACTED
    ),
    before=st.text(_SECRET_CHARS, max_size=40),
    after=st.text(_SECRET_CHARS, max_size=40),
)
@settings(max_examples=300, deadline=None)
def test_no_secret_survives_in_text_bytes_or_json(secret: str, before: str, after: str) -> None:
    redactor = Redactor([secret])
    assert secret not in redactor.text(before + secret + after)
    assert secret not in redactor.message(before + secret + after)
    assert secret.encode() not in redactor.bytes(orjson.dumps({"k": before + secret + after}))
    assert secret not in orjson.dumps(redactor.value({"error": {"param": before + secret + after}})).decode()


def test_an_aws_style_error_body_keeps_its_message() -> None:
    """Bedrock answers `{"message": ...}` with its type in a header: the client reads AWS's text, scrubbed."""
    raw = b'{"message": "The provided model identifier is invalid. key sk-upstream-aaaaaaaaaaaa"}'
    error = status_error(400, raw, Redactor(["sk-upstream-aaaaaaaaaaaa"]))
    assert error.message.startswith("The provided model identifier is invalid.")
    assert "sk-upstream-aaaaaaaaaaaa" not in error.message
