"""`sanitize_message`: what an upstream error message may carry out of the process.

Guards the upstream key (or anything shaped like a key or bearer token) reaching a client or a log through
an upstream's error message, and unbounded upstream bodies copied into our errors.
"""

from __future__ import annotations

import pytest

from haimaker.providers.redaction import sanitize_message


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
