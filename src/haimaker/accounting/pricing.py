"""Model prices and the cost of a request.

Owns the price table shipped with the package (`prices.json`, generated offline by
`scripts/build_prices.py` from genai-prices; nothing is fetched at run time), the parsing of an OpenAI
`usage` object into a `Usage`, and the one cost formula. Prices are `Decimal` USD per token; a cost is
computed in `Decimal` and quantised once, to nano-dollars, by `money.usd_to_nanos`.

Token conventions (OpenAI's): `prompt_tokens` *includes* cached tokens. `cache_read_tokens` and
`cache_creation_tokens` say how many of the prompt tokens were read from, or written to, a prompt cache;
they are billed at their own price when the model has one, else at the input price.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from importlib import resources
from types import MappingProxyType
from typing import Any, Final

from haimaker.money import Nanos, usd_to_nanos

__all__ = [
    "MAX_REQUEST_COST_NANOS",
    "MAX_TOKENS_PER_FIELD",
    "ModelPrice",
    "PriceTable",
    "Usage",
    "UsageError",
    "check_billable",
    "cost_nanos",
    "estimate_max_cost_nanos",
    "price_from_overrides",
    "usage_from_openai",
]

# A config may give a price as a YAML float, an int or a string.
PriceValue = Decimal | float | int | str

_DATE_SUFFIXES: Final = (
    re.compile(r"[-@](\d{4}-\d{2}-\d{2}|\d{8})$"),  # gpt-4o-2024-08-06, claude-3-5-sonnet-20241022, @20240620
    re.compile(r"-\d{4}$"),  # gpt-4-0613, gpt-3.5-turbo-0125
    re.compile(r"-latest$"),
)
# A Bedrock id of Anthropic's Claude: an optional cross-region inference profile (`us.`, `eu.`, `apac.`, `global.`,
# ...), the vendor, then the model with a version (`-v2:0`). Claude costs the same per token on Bedrock as from
# Anthropic, so it is priced under Anthropic's name. Other vendors' Bedrock ids are not mapped: the table's
# same-named entries are other hosts' prices (Groq's Llama, Mistral's own API), not Bedrock's.
_BEDROCK_CLAUDE: Final = re.compile(
    r"^(?:[a-z]{2,6}(?:-[a-z]+)?\.)?anthropic\.(claude-[a-z0-9.-]+?)(?:-v\d+)?(?::\d+)?$"
)


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """USD per token for one model (or one deployment, after config overrides)."""

    input_cost_per_token: Decimal
    output_cost_per_token: Decimal
    cache_read_input_token_cost: Decimal | None = None
    cache_creation_input_token_cost: Decimal | None = None
    max_output_tokens: int | None = None
    max_input_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request; `prompt_tokens` includes the cache read and creation tokens."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


# No real model comes near these; past them an upstream's usage is a fault, never a charge (issue 10, finding 1).
# 100M tokens per field: 47x the largest context window in the bundled price table (2,097,152, Gemini 1.5 Pro) and
# 10x the largest any model announces (10M, Llama 4 Scout), yet 92 billion times below the 2^63 nano-dollars a
# ledger column holds. Exact-size integers only: 1e30 or 2**62 "tokens" would price to an int the stores cannot write.
MAX_TOKENS_PER_FIELD: Final = 100_000_000
# One request may cost at most $1M. Bounded usage at the dearest bundled price (o1-pro, $600 per 1M output tokens)
# stays under $240k, so this only trips on a nonsense price (a config typo such as a price per 1M tokens given per
# token), and it keeps 9,000 such charges inside one customer's 64-bit spend.
MAX_REQUEST_COST_NANOS: Final = usd_to_nanos(Decimal(1_000_000))
_ALWAYS_BILLABLE_RATE: Final = Decimal(1_000_000) / (4 * MAX_TOKENS_PER_FIELD)


class UsageError(ValueError):
    """An upstream's `usage` that no real model can report (or a cost no request can have): never priced."""


def _count(value: object, path: tuple[str, ...]) -> int | None:
    """A token count from untrusted JSON: None when absent/null, else a non-negative bounded integer.

    Raises:
        UsageError: a value of another type, negative, fractional, non-finite or above `MAX_TOKENS_PER_FIELD`.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"usage.{'.'.join(path)} is not a number")
    if isinstance(value, float):
        if not value.is_integer():  # also NaN and infinities
            raise UsageError(f"usage.{'.'.join(path)} is not a whole number")
        value = int(value)
    if value < 0:
        raise UsageError(f"usage.{'.'.join(path)} is negative")
    if value > MAX_TOKENS_PER_FIELD:
        raise UsageError(f"usage.{'.'.join(path)} is above {MAX_TOKENS_PER_FIELD} tokens")
    return value


def _field(obj: Mapping[str, Any], *path: str) -> int | None:
    value: object = obj
    for key in path:
        if not isinstance(value, Mapping):
            return None  # a details object of the wrong shape: no cache discount, never an over-read
        value = value.get(key)
    return _count(value, path)


def usage_from_openai(obj: object) -> Usage | None:
    """Parse an OpenAI `usage` object (chat, completions, embeddings, or the Responses API shape).

    Returns None when `obj` is None or carries no token count at all; counts that are missing or null read as 0.
    Anthropic's `cache_read_input_tokens` / `cache_creation_input_tokens` are understood; when they come with
    Anthropic's `input_tokens` (which excludes them) instead of `prompt_tokens`, they are added to the prompt count.

    Raises:
        UsageError: `obj` is not an object, a count is not a bounded non-negative integer, or the cache counts exceed
            the prompt they are part of.
    """
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise UsageError("usage is not an object")
    prompt = _field(obj, "prompt_tokens")
    completion = _field(obj, "completion_tokens")
    total = _field(obj, "total_tokens")
    input_tokens = _field(obj, "input_tokens")
    output_tokens = _field(obj, "output_tokens")
    anthropic_read = _field(obj, "cache_read_input_tokens")
    anthropic_creation = _field(obj, "cache_creation_input_tokens")
    cached = _field(obj, "prompt_tokens_details", "cached_tokens")
    if cached is None:
        cached = _field(obj, "input_tokens_details", "cached_tokens")  # Responses API

    cache_read = cached if cached is not None else (anthropic_read or 0)
    cache_creation = anthropic_creation or 0
    if prompt is None and input_tokens is not None:
        is_anthropic = cached is None and (anthropic_read is not None or anthropic_creation is not None)
        prompt = input_tokens + cache_read + cache_creation if is_anthropic else input_tokens
    if completion is None:
        completion = output_tokens
    if prompt is None and completion is None:
        if total is None:
            return None
        prompt = total  # an embeddings response reporting only total_tokens
    prompt = prompt or 0
    completion = completion or 0
    if cache_read + cache_creation > prompt:
        raise UsageError("usage reports more cached tokens than prompt tokens")
    return Usage(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cache_read_tokens=cache_read,
        cache_creation_tokens=cache_creation,
    )


def cost_nanos(price: ModelPrice, usage: Usage) -> Nanos:
    """The cost of `usage` at `price`, in nano-dollars (computed in Decimal, rounded once)."""
    cache_read = max(usage.cache_read_tokens, 0)
    cache_creation = max(usage.cache_creation_tokens, 0)
    uncached = max(usage.prompt_tokens - cache_read - cache_creation, 0)
    read_price = price.cache_read_input_token_cost
    creation_price = price.cache_creation_input_token_cost
    usd = (
        uncached * price.input_cost_per_token
        + cache_read * (price.input_cost_per_token if read_price is None else read_price)
        + cache_creation * (price.input_cost_per_token if creation_price is None else creation_price)
        + max(usage.completion_tokens, 0) * price.output_cost_per_token
    )
    return usd_to_nanos(usd)


def check_billable(price: ModelPrice | None, usage: Usage) -> None:
    """Refuse a `usage` that would cost more than `MAX_REQUEST_COST_NANOS` at `price`.

    Raises:
        UsageError: the cost exceeds the bound.
    """
    if price is None:
        return
    # Bounded usage (at most 4 fields of MAX_TOKENS_PER_FIELD) cannot cost more than the bound at a rate up to
    # $0.0025 per token (every real price): then the exact cost, computed again when settling, is not needed here.
    read, creation = price.cache_read_input_token_cost or 0, price.cache_creation_input_token_cost or 0
    if max(price.input_cost_per_token, price.output_cost_per_token, read, creation) <= _ALWAYS_BILLABLE_RATE:
        return
    if cost_nanos(price, usage) > MAX_REQUEST_COST_NANOS:
        raise UsageError(f"usage would cost more than ${MAX_REQUEST_COST_NANOS // 10**9:,} for one request")


def estimate_max_cost_nanos(price: ModelPrice, prompt_tokens: int, max_output_tokens: int, n: int = 1) -> Nanos:
    """The most a request can cost: every prompt token uncached, `n` choices of `max_output_tokens` each."""
    usd = prompt_tokens * price.input_cost_per_token + max_output_tokens * price.output_cost_per_token * n
    return usd_to_nanos(usd)


def _to_decimal(value: PriceValue, name: str) -> Decimal:
    try:
        number = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if not number.is_finite() or number < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return number


def _optional_decimal(value: PriceValue | None, name: str) -> Decimal | None:
    return None if value is None else _to_decimal(value, name)


def price_from_overrides(
    input_cost_per_token: PriceValue | None,
    output_cost_per_token: PriceValue | None,
    base: ModelPrice | None,
    cache_read_input_token_cost: PriceValue | None = None,
    cache_creation_input_token_cost: PriceValue | None = None,
) -> ModelPrice:
    """A deployment's price: config overrides on top of the table price `base` (if any).

    An override left as None keeps the base value. The base cache prices are kept only while the input
    price is the base one: they are discounts relative to it, so with a custom input price and no custom
    cache price, cached tokens are billed at the custom input price (over- rather than under-charging).

    Raises:
        ValueError: a price is not a finite number >= 0, or input/output is missing with no base price.
    """
    new_input = _optional_decimal(input_cost_per_token, "input_cost_per_token")
    new_output = _optional_decimal(output_cost_per_token, "output_cost_per_token")
    new_read = _optional_decimal(cache_read_input_token_cost, "cache_read_input_token_cost")
    new_creation = _optional_decimal(cache_creation_input_token_cost, "cache_creation_input_token_cost")
    if base is None:
        if new_input is None or new_output is None:
            raise ValueError("input_cost_per_token and output_cost_per_token are required for a model without a price")
        return ModelPrice(new_input, new_output, new_read, new_creation)
    input_cost = base.input_cost_per_token if new_input is None else new_input
    if input_cost == base.input_cost_per_token:
        new_read = base.cache_read_input_token_cost if new_read is None else new_read
        new_creation = base.cache_creation_input_token_cost if new_creation is None else new_creation
    return ModelPrice(
        input_cost_per_token=input_cost,
        output_cost_per_token=base.output_cost_per_token if new_output is None else new_output,
        cache_read_input_token_cost=new_read,
        cache_creation_input_token_cost=new_creation,
        max_output_tokens=base.max_output_tokens,
        max_input_tokens=base.max_input_tokens,
    )


def _price_from_entry(entry: Mapping[str, Any]) -> ModelPrice:
    def optional_int(key: str) -> int | None:
        value = entry.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None

    return ModelPrice(
        input_cost_per_token=_to_decimal(entry["input_cost_per_token"], "input_cost_per_token"),
        output_cost_per_token=_to_decimal(entry["output_cost_per_token"], "output_cost_per_token"),
        cache_read_input_token_cost=_optional_decimal(entry.get("cache_read_input_token_cost"), "cache_read"),
        cache_creation_input_token_cost=_optional_decimal(
            entry.get("cache_creation_input_token_cost"), "cache_creation"
        ),
        max_output_tokens=optional_int("max_output_tokens"),
        max_input_tokens=optional_int("max_input_tokens"),
    )


class PriceTable:
    """An immutable map from model name to `ModelPrice`, with forgiving, case-insensitive lookup."""

    __slots__ = ("_prices",)

    def __init__(self, prices: Mapping[str, ModelPrice]) -> None:
        self._prices: Mapping[str, ModelPrice] = MappingProxyType({k.lower(): v for k, v in prices.items()})

    @classmethod
    def from_json_entries(cls, entries: Mapping[str, Mapping[str, Any]]) -> PriceTable:
        """Build a table from `prices.json`-shaped entries (decimal strings per token)."""
        return cls({name: _price_from_entry(entry) for name, entry in entries.items()})

    @classmethod
    def bundled(cls) -> PriceTable:
        """The table shipped in the package (read and parsed once per process)."""
        return _bundled_table()

    def __len__(self) -> int:
        return len(self._prices)

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.lookup(model) is not None

    def lookup(self, model: str) -> ModelPrice | None:
        """The price of `model`, or None if unknown.

        Tries, case-insensitively: the exact name; the name without its `provider/` prefixes, one at a time;
        then each of those with a date or `-latest` suffix stripped (`gpt-4o-2024-08-06` -> `gpt-4o`).
        """
        for candidate in _candidates(model.strip().lower()):
            price = self._prices.get(candidate)
            if price is not None:
                return price
        return None


def _candidates(name: str) -> list[str]:
    names = [name]
    while "/" in name:
        name = name.split("/", 1)[1]
        names.append(name)
    for candidate in list(names):
        bedrock = _BEDROCK_CLAUDE.match(candidate)
        if bedrock is not None:
            names.append(bedrock[1])
    undated: list[str] = []
    for candidate in names:
        for pattern in _DATE_SUFFIXES:
            stripped = pattern.sub("", candidate)
            if stripped != candidate and stripped:
                undated.append(stripped)
    return names + undated


@functools.cache
def _bundled_table() -> PriceTable:
    # Cached on purpose: the table is immutable data shipped with the code, identical for every app.
    text = resources.files("haimaker.accounting").joinpath("prices.json").read_text(encoding="utf-8")
    document = json.loads(text)
    return PriceTable.from_json_entries(document["models"])
