"""Build `src/haimaker/accounting/prices.json` from the offline data snapshot of the `genai-prices` package.

Run from the repository root whenever genai-prices is upgraded:

    .venv/bin/python scripts/build_prices.py

The output maps lower-case model names (bare and with LiteLLM-style provider prefixes such as `azure/` or
`anthropic/`) to per-token prices as decimal strings, so the gateway never needs the network or genai-prices
at run time. Decisions made here:

- Providers: OpenAI, Azure OpenAI (its own models plus every OpenAI model), Anthropic, Google Gemini,
  Mistral and Groq. Bare names are claimed in that order; the first provider to claim a name keeps it.
- Names come from each model's id and from the exact names, prefixes and substrings its match rules list
  (only plain model-like strings; regexes and fragments ending in a separator are skipped).
- Prices are those in force when the script runs. Tiered prices (long-context premiums) are recorded at
  their base tier; per-request, audio and image prices are not modelled. A model without a text input price
  is skipped; one without an output price (embeddings) gets output 0.
- `max_input_tokens` comes from genai-prices' context window, or from `_KNOWN_LIMITS`;
  `max_output_tokens` only from `_KNOWN_LIMITS` (genai-prices does not carry it).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from genai_prices import types as gp
from genai_prices.data import providers

OUTPUT = Path(__file__).resolve().parent.parent / "src" / "haimaker" / "accounting" / "prices.json"
MTOK = Decimal(1_000_000)
_NAME = re.compile(r"[a-z0-9][a-z0-9._/\-]*[a-z0-9]")
_DATED_FRAGMENT = re.compile(r"-\d{4}$")  # e.g. "claude-sonnet-4-2025", a prefix of dated names only

# (genai-prices provider id, LiteLLM-style prefixes); bare names are claimed in this order
_PROVIDERS: list[tuple[str, tuple[str, ...]]] = [
    ("openai", ("openai/",)),
    ("anthropic", ("anthropic/",)),
    ("google", ("gemini/", "vertex_ai/")),
    ("mistral", ("mistral/",)),
    ("azure", ("azure/",)),
    ("groq", ("groq/",)),
]

# (max_input_tokens, max_output_tokens) for major models, from the providers' model pages. Keyed by
# genai-prices model id.
_KNOWN_LIMITS: dict[str, tuple[int | None, int]] = {
    "gpt-3.5-turbo": (16_385, 4_096),
    "gpt-3.5-turbo-0613": (4_096, 4_096),
    "gpt-3.5-turbo-1106": (16_385, 4_096),
    "gpt-3.5-turbo-16k": (16_385, 4_096),
    "gpt-3.5-turbo-instruct": (4_096, 4_096),
    "gpt-4": (8_192, 4_096),
    "gpt-4-32k": (32_768, 4_096),
    "gpt-4-turbo": (128_000, 4_096),
    "gpt-4-vision-preview": (128_000, 4_096),
    "gpt-4o": (128_000, 16_384),
    "gpt-4o-2024-05-13": (128_000, 4_096),
    "gpt-4o-mini": (128_000, 16_384),
    "gpt-4o-search-preview": (128_000, 16_384),
    "gpt-4o-audio-preview": (128_000, 16_384),
    "gpt-4o-mini-audio-preview": (128_000, 16_384),
    "chatgpt-4o-latest": (128_000, 16_384),
    "gpt-4.1": (1_047_576, 32_768),
    "gpt-4.1-mini": (1_047_576, 32_768),
    "gpt-4.1-nano": (1_047_576, 32_768),
    "gpt-4.5-preview": (128_000, 16_384),
    "gpt-5": (272_000, 128_000),
    "gpt-5-mini": (272_000, 128_000),
    "gpt-5-nano": (272_000, 128_000),
    "gpt-5-pro": (272_000, 272_000),
    "gpt-5.1": (272_000, 128_000),
    "gpt-5.1-codex-mini": (272_000, 128_000),
    "gpt-5.2": (272_000, 128_000),
    "o1": (200_000, 100_000),
    "o1-mini": (128_000, 65_536),
    "o1-preview": (128_000, 32_768),
    "o1-pro": (200_000, 100_000),
    "o3": (200_000, 100_000),
    "o3-2025-04-16": (200_000, 100_000),
    "o3-mini": (200_000, 100_000),
    "o3-pro": (200_000, 100_000),
    "o4-mini": (200_000, 100_000),
    "claude-3-haiku": (200_000, 4_096),
    "claude-3-sonnet": (200_000, 4_096),
    "claude-3-opus-latest": (200_000, 4_096),
    "claude-3-5-haiku-latest": (200_000, 8_192),
    "claude-3-5-sonnet": (200_000, 8_192),
    "claude-3-7-sonnet-latest": (200_000, 64_000),
    "claude-sonnet-4-0": (200_000, 64_000),
    "claude-sonnet-4-5": (200_000, 64_000),
    "claude-opus-4-0": (200_000, 32_000),
    "claude-opus-4-1": (200_000, 32_000),
    "claude-opus-4-5": (200_000, 64_000),
    "claude-haiku-4-5": (200_000, 64_000),
    "gemini-1.5-flash": (1_048_576, 8_192),
    "gemini-1.5-pro": (2_097_152, 8_192),
    "gemini-2.0-flash": (1_048_576, 8_192),
    "gemini-2.0-flash-lite": (1_048_576, 8_192),
    "gemini-2.5-flash": (1_048_576, 65_535),
    "gemini-2.5-flash-lite": (1_048_576, 65_535),
    "gemini-2.5-pro": (1_048_576, 65_535),
    "llama-3.1-8b-instant": (131_072, 8_192),
    "llama-3.3-70b-versatile": (131_072, 32_768),
}

# Names that must come out with these exact prices (the gateway's tests and LiteLLM users rely on them).
_EXPECTED = {
    "gpt-3.5-turbo": ("0.0000005", "0.0000015"),
    "gpt-35-turbo": ("0.0000005", "0.0000015"),
    "azure/gpt-35-turbo": ("0.0000005", "0.0000015"),
    "gpt-4o-mini": ("0.00000015", "0.0000006"),
}


def _flat_price(value: object) -> Decimal | None:
    if isinstance(value, gp.TieredPrices):
        return value.base
    if isinstance(value, Decimal):
        return value
    return None


def _per_token(per_mtok: Decimal) -> str:
    return format((per_mtok / MTOK).normalize(), "f")


def _match_names(clause: object, *, exact_only: bool) -> Iterator[str]:
    if isinstance(clause, gp.ClauseEquals):
        yield clause.equals
    elif isinstance(clause, gp.ClauseOr):
        for inner in clause.or_:
            yield from _match_names(inner, exact_only=exact_only)
    elif not exact_only and isinstance(clause, gp.ClauseStartsWith):
        yield clause.starts_with
    elif not exact_only and isinstance(clause, gp.ClauseContains):
        yield clause.contains
    elif not exact_only and isinstance(clause, gp.ClauseEndsWith):
        yield clause.ends_with


def _entry(model: gp.ModelInfo, now: datetime) -> dict[str, Any] | None:
    prices = model.get_prices(now)
    values = prices.__dict__
    input_mtok = _flat_price(values.get("input_mtok"))
    if input_mtok is None:
        return None
    output_mtok = _flat_price(values.get("output_mtok")) or Decimal(0)
    entry: dict[str, Any] = {
        "input_cost_per_token": _per_token(input_mtok),
        "output_cost_per_token": _per_token(output_mtok),
    }
    cache_read = _flat_price(values.get("cache_read_mtok"))
    if cache_read is not None:
        entry["cache_read_input_token_cost"] = _per_token(cache_read)
    cache_write = _flat_price(values.get("cache_write_mtok"))
    if cache_write is not None:
        entry["cache_creation_input_token_cost"] = _per_token(cache_write)
    known_input, known_output = _KNOWN_LIMITS.get(model.id, (None, None))
    max_input = known_input or model.context_window
    if max_input:
        entry["max_input_tokens"] = max_input
    if known_output:
        entry["max_output_tokens"] = known_output
    return entry


def _is_usable_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name)) and not _DATED_FRAGMENT.search(name)


def _provider_models(provider_id: str) -> list[gp.ModelInfo]:
    by_id = {provider.id: provider for provider in providers}
    provider = by_id[provider_id]
    models = [model for model in provider.models if not (provider_id == "google" and "claude" in model.id)]
    if provider_id == "azure":  # Azure OpenAI serves the OpenAI models under the same names
        models += by_id["openai"].models
    return models


def build(now: datetime) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    conflicts: list[str] = []

    def claim(name: str, entry: dict[str, Any]) -> None:
        existing = table.get(name)
        if existing is None:
            table[name] = entry
        elif existing != entry and name.split("/", 1)[0] not in ("azure",):
            conflicts.append(name)

    for provider_id, prefixes in _PROVIDERS:
        entries: list[tuple[str, dict[str, Any]]] = []
        # Exact names first, so a prefix rule of one model never shadows another model's exact name.
        for exact_only in (True, False):
            for model in _provider_models(provider_id):
                entry = _entry(model, now)
                if entry is None:
                    continue
                names = list(_match_names(model.match, exact_only=exact_only))
                if exact_only:
                    names.insert(0, model.id)
                entries.extend((name.lower(), entry) for name in names if _is_usable_name(name.lower()))
        provider_names: dict[str, dict[str, Any]] = {}
        for name, entry in entries:
            provider_names.setdefault(name, entry)
        for name, entry in provider_names.items():
            for prefix in prefixes:
                claim(prefix + name, entry)
            if "/" not in name:
                claim(name, entry)
    if conflicts:
        sys.stdout.write(f"kept the first provider's price for {len(conflicts)} shared names: {sorted(conflicts)}\n")
    return dict(sorted(table.items()))


def _check(table: dict[str, dict[str, Any]]) -> None:
    for name, (input_cost, output_cost) in _EXPECTED.items():
        entry = table[name]
        actual = (entry["input_cost_per_token"], entry["output_cost_per_token"])
        if Decimal(actual[0]) != Decimal(input_cost) or Decimal(actual[1]) != Decimal(output_cost):
            sys.exit(f"{name}: expected {input_cost}/{output_cost}, got {actual}")


def _compact(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def main() -> None:
    now = datetime.now(UTC)
    table = build(now)
    _check(table)
    header = {
        "_comment": "Generated by scripts/build_prices.py from genai-prices; do not edit. USD per token, as decimals.",
        "_source": f"genai-prices snapshot, prices in force on {now.date().isoformat()}",
    }
    lines = [f"{json.dumps(key)}:{_compact(value)}" for key, value in header.items()]
    # One model per line keeps diffs readable without the size of a fully indented file.
    models = ",\n".join(f"{json.dumps(name)}:{_compact(entry)}" for name, entry in table.items())
    lines.append('"models":{\n' + models + "\n}")
    OUTPUT.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    sys.stdout.write(f"wrote {len(table)} names, {OUTPUT.stat().st_size // 1024} KB to {OUTPUT}\n")


if __name__ == "__main__":
    main()
