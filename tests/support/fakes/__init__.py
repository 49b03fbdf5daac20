"""Fake upstream LLM servers for end-to-end tests (see `openai_upstream.py`)."""

from __future__ import annotations

from .behavior import Behavior, StreamUsage, azure_error_body, openai_error_body
from .openai_upstream import FakeAzureOpenAI, FakeOpenAI
from .recording import RecordedRequest, Stats
from .server import BEHAVIOR_FIELD, BEHAVIOR_HEADER, DEFAULT_API_KEY, FakeUpstream

__all__ = [
    "BEHAVIOR_FIELD",
    "BEHAVIOR_HEADER",
    "DEFAULT_API_KEY",
    "Behavior",
    "FakeAzureOpenAI",
    "FakeOpenAI",
    "FakeUpstream",
    "RecordedRequest",
    "Stats",
    "StreamUsage",
    "azure_error_body",
    "openai_error_body",
]
