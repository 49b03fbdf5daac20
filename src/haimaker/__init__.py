"""haimaker: a fast, OpenAI-compatible LLM gateway with per-customer spend tracking and budgets."""

from __future__ import annotations

__version__ = "0.1.0"
