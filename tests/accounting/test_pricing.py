from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

from haimaker.accounting.pricing import (
    MAX_REQUEST_COST_NANOS,
    MAX_TOKENS_PER_FIELD,
    ModelPrice,
    PriceTable,
    Usage,
    UsageError,
    check_billable,
    cost_nanos,
    estimate_max_cost_nanos,
    price_from_overrides,
    usage_from_openai,
)

GPT35 = ModelPrice(Decimal("5e-07"), Decimal("1.5e-06"))


def make_price(**overrides: Any) -> ModelPrice:
    fields: dict[str, Any] = {
        "input_cost_per_token": Decimal("0.0000025"),
        "output_cost_per_token": Decimal("0.00001"),
        "cache_read_input_token_cost": Decimal("0.00000125"),
    }
    fields.update(overrides)
    return ModelPrice(**fields)


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return PriceTable.bundled()


# --- the bundled table ---------------------------------------------------------------------------


def test_bundled_table_has_the_litellm_reference_prices(table: PriceTable) -> None:
    for name in ("gpt-3.5-turbo", "gpt-35-turbo", "azure/gpt-35-turbo", "openai/gpt-3.5-turbo"):
        price = table.lookup(name)
        assert price is not None, name
        assert price.input_cost_per_token == Decimal("5e-07")
        assert price.output_cost_per_token == Decimal("1.5e-06")
        assert price.max_output_tokens == 4096
    mini = table.lookup("gpt-4o-mini")
    assert mini is not None
    assert (mini.input_cost_per_token, mini.output_cost_per_token) == (Decimal("1.5e-07"), Decimal("6e-07"))
    assert mini.max_output_tokens == 16384
    gpt4o = table.lookup("gpt-4o")
    assert gpt4o is not None
    assert gpt4o.max_output_tokens == 16384
    assert gpt4o.max_input_tokens == 128000
    assert gpt4o.cache_read_input_token_cost == Decimal("0.00000125")


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o",
        "azure/gpt-4o",
        "anthropic/claude-3-5-sonnet",
        "claude-sonnet-4-5",
        "gemini/gemini-2.5-flash",
        "gemini-2.5-pro",
        "mistral/mistral-large-latest",
        "groq/llama-3.3-70b-versatile",
        "text-embedding-3-small",
        "o3-mini",
        "gpt-4.1",
        "gpt-5",
    ],
)
def test_bundled_table_covers_the_major_providers(table: PriceTable, name: str) -> None:
    price = table.lookup(name)
    assert price is not None
    assert price.input_cost_per_token > 0


def test_bundled_prices_json_is_small_and_all_decimal_strings() -> None:
    resource = resources.files("haimaker.accounting").joinpath("prices.json")
    raw = resource.read_bytes()
    assert len(raw) < 300 * 1024
    models = json.loads(raw)["models"]
    for name, entry in models.items():
        assert name == name.lower()
        assert isinstance(entry["input_cost_per_token"], str)
        assert isinstance(entry["output_cost_per_token"], str)
        Decimal(entry["input_cost_per_token"])


def test_bundled_is_loaded_once(table: PriceTable) -> None:
    assert PriceTable.bundled() is table
    assert len(table) > 500


@pytest.mark.parametrize(
    ("name", "same_as"),
    [
        ("GPT-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("azure/gpt-4o-2024-08-06", "gpt-4o"),
        ("openrouter/openai/gpt-4o", "gpt-4o"),
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("anthropic/claude-3-5-sonnet-20241022", "claude-3-5-sonnet"),
        ("vertex_ai/claude-3-5-sonnet@20240620", "claude-3-5-sonnet"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("gpt-4o-mini-2099-01-01", "gpt-4o-mini"),
        ("gemini-2.5-flash-latest", "gemini-2.5-flash"),
        ("  gpt-3.5-turbo ", "gpt-3.5-turbo"),
    ],
)
def test_lookup_strips_prefixes_dates_and_case(table: PriceTable, name: str, same_as: str) -> None:
    expected = table.lookup(same_as)
    assert expected is not None
    assert table.lookup(name) == expected


def test_lookup_prefers_an_exact_dated_entry_over_the_undated_one(table: PriceTable) -> None:
    old = table.lookup("gpt-4o-2024-05-13")
    current = table.lookup("gpt-4o")
    assert old is not None and current is not None
    assert old.input_cost_per_token == Decimal("0.000005")
    assert current.input_cost_per_token == Decimal("0.0000025")


@pytest.mark.parametrize("name", ["my-private-model", "azure/my-deployment", "", "/", "gpt-4o/", "2024-08-06"])
def test_lookup_of_an_unknown_model_is_none(table: PriceTable, name: str) -> None:
    assert table.lookup(name) is None
    assert name not in table


def test_custom_table_lookup_is_case_insensitive() -> None:
    custom = PriceTable.from_json_entries(
        {"My-Model": {"input_cost_per_token": "0.000001", "output_cost_per_token": 2e-06, "max_output_tokens": 10}}
    )
    price = custom.lookup("custom/my-model")
    assert price == ModelPrice(Decimal("0.000001"), Decimal("0.000002"), max_output_tokens=10)


# --- cost --------------------------------------------------------------------------------------------


def test_cost_of_gpt35_turbo_is_exact_in_nanos() -> None:
    assert cost_nanos(GPT35, Usage(prompt_tokens=10, completion_tokens=20)) == 5_000 + 30_000


def test_cost_of_a_single_cheap_token_is_not_rounded_away() -> None:
    embedding = ModelPrice(Decimal("0.00000002"), Decimal(0))
    assert cost_nanos(embedding, Usage(prompt_tokens=1)) == 20
    assert cost_nanos(ModelPrice(Decimal("2.5e-10"), Decimal(0)), Usage(prompt_tokens=1)) == 0  # half-even
    assert cost_nanos(ModelPrice(Decimal("7.5e-10"), Decimal(0)), Usage(prompt_tokens=1)) == 1


def test_cost_bills_cached_prompt_tokens_at_the_cache_read_price() -> None:
    price = make_price()
    usage = Usage(prompt_tokens=1000, completion_tokens=100, cache_read_tokens=400)
    # 600 uncached x 2500 + 400 cached x 1250 + 100 x 10000 nanos
    assert cost_nanos(price, usage) == 600 * 2500 + 400 * 1250 + 100 * 10_000


def test_cost_bills_cache_creation_at_its_price_or_the_input_price() -> None:
    usage = Usage(prompt_tokens=1000, cache_read_tokens=200, cache_creation_tokens=300)
    with_write_price = make_price(cache_creation_input_token_cost=Decimal("0.000003125"))
    assert cost_nanos(with_write_price, usage) == 500 * 2500 + 200 * 1250 + 300 * 3125
    assert cost_nanos(make_price(), usage) == 500 * 2500 + 200 * 1250 + 300 * 2500


def test_cost_without_a_cache_price_bills_cached_tokens_as_input() -> None:
    assert cost_nanos(GPT35, Usage(prompt_tokens=10, cache_read_tokens=10)) == 5_000


def test_cost_never_prices_negative_tokens() -> None:
    usage = Usage(prompt_tokens=5, completion_tokens=-3, cache_read_tokens=10)
    assert cost_nanos(make_price(), usage) == 10 * 1250


def test_estimate_max_cost_counts_every_choice() -> None:
    assert estimate_max_cost_nanos(GPT35, prompt_tokens=10, max_output_tokens=20) == 35_000
    assert estimate_max_cost_nanos(GPT35, prompt_tokens=10, max_output_tokens=20, n=3) == 5_000 + 3 * 30_000


def test_usage_total_tokens() -> None:
    assert Usage(prompt_tokens=7, completion_tokens=5, cache_read_tokens=3).total_tokens == 12


# --- overrides ----------------------------------------------------------------------------------------


def test_price_from_overrides_converts_floats_through_their_text() -> None:
    price = price_from_overrides(5e-07, "1.5e-06", None)
    assert price == GPT35
    assert cost_nanos(price, Usage(prompt_tokens=10, completion_tokens=20)) == 35_000


def test_price_from_overrides_keeps_base_limits_and_unset_prices() -> None:
    base = make_price(max_output_tokens=16384, max_input_tokens=128000)
    price = price_from_overrides(None, 0.00002, base)
    assert price.input_cost_per_token == base.input_cost_per_token
    assert price.output_cost_per_token == Decimal("0.00002")
    assert price.cache_read_input_token_cost == base.cache_read_input_token_cost
    assert (price.max_output_tokens, price.max_input_tokens) == (16384, 128000)


def test_price_from_overrides_drops_base_cache_discount_when_input_price_changes() -> None:
    base = make_price(cache_creation_input_token_cost=Decimal("0.000003"))
    price = price_from_overrides(0.000001, None, base)
    assert price.cache_read_input_token_cost is None
    assert price.cache_creation_input_token_cost is None
    explicit = price_from_overrides(0.000001, None, base, cache_read_input_token_cost="1e-7")
    assert explicit.cache_read_input_token_cost == Decimal("1e-7")


@pytest.mark.parametrize(
    ("input_cost", "output_cost"),
    [(None, 1e-6), (1e-6, None), ("abc", 1e-6), (-1e-6, 1e-6), (float("nan"), 1e-6), (1e-6, float("inf"))],
)
def test_price_from_overrides_rejects_missing_or_bad_prices(input_cost: Any, output_cost: Any) -> None:
    with pytest.raises(ValueError):
        price_from_overrides(input_cost, output_cost, None)


# --- usage parsing ------------------------------------------------------------------------------------


def test_usage_from_openai_chat_with_cached_tokens() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 1200,
            "completion_tokens": 30,
            "total_tokens": 1230,
            "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 10},
        }
    )
    assert usage == Usage(prompt_tokens=1200, completion_tokens=30, cache_read_tokens=1024)


def test_usage_from_openai_embeddings() -> None:
    assert usage_from_openai({"prompt_tokens": 8, "total_tokens": 8}) == Usage(prompt_tokens=8)
    assert usage_from_openai({"total_tokens": 8}) == Usage(prompt_tokens=8)


def test_usage_from_openai_with_anthropic_cache_fields() -> None:
    usage = usage_from_openai(
        {
            "prompt_tokens": 500,
            "completion_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 300,
        }
    )
    assert usage == Usage(prompt_tokens=500, completion_tokens=5, cache_read_tokens=100, cache_creation_tokens=300)


def test_usage_from_anthropic_native_shape_adds_cache_tokens_to_the_prompt() -> None:
    usage = usage_from_openai(
        {"input_tokens": 50, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 300}
    )
    assert usage == Usage(prompt_tokens=450, completion_tokens=5, cache_read_tokens=100, cache_creation_tokens=300)


def test_usage_from_responses_api_shape() -> None:
    usage = usage_from_openai({"input_tokens": 90, "output_tokens": 12, "input_tokens_details": {"cached_tokens": 64}})
    assert usage == Usage(prompt_tokens=90, completion_tokens=12, cache_read_tokens=64)


@pytest.mark.parametrize(
    "empty",
    [None, {}, {"foo": 1}, {"prompt_tokens": None, "completion_tokens": None}],
)
def test_usage_without_counts_is_none(empty: Any) -> None:
    assert usage_from_openai(empty) is None


def test_usage_counts_may_be_integral_floats_and_details_may_be_missing() -> None:
    usage = usage_from_openai({"prompt_tokens": 10.0, "completion_tokens": 2, "prompt_tokens_details": None})
    assert usage == Usage(prompt_tokens=10, completion_tokens=2)
    assert usage_from_openai({"completion_tokens": 7}) == Usage(completion_tokens=7)
    # A details field of the wrong shape only loses the cache discount (billed at the input price).
    assert usage_from_openai({"prompt_tokens": 5, "prompt_tokens_details": "cached"}) == Usage(prompt_tokens=5)


@pytest.mark.parametrize(
    "usage",
    [
        "usage",
        42,
        [],
        {"prompt_tokens": 2**62},
        {"prompt_tokens": 1e30},
        {"prompt_tokens": 1e308},
        {"prompt_tokens": float("inf")},
        {"prompt_tokens": float("nan")},
        {"completion_tokens": MAX_TOKENS_PER_FIELD + 1},
        {"total_tokens": 2**62},
        {"prompt_tokens": -5},
        {"prompt_tokens": 10, "completion_tokens": 2.5},
        {"prompt_tokens": "10"},
        {"prompt_tokens": 10, "completion_tokens": True},
        {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 50}},
        {"prompt_tokens": 5, "cache_read_input_tokens": 4, "cache_creation_input_tokens": 4},
        {"input_tokens": 2**62, "output_tokens": 1},
        {"input_tokens": 5, "output_tokens": 1, "input_tokens_details": {"cached_tokens": -1}},
    ],
    ids=repr,
)
def test_impossible_usage_is_refused_not_clamped(usage: Any) -> None:
    # What no real model can report is an upstream fault: pricing it would charge nonsense (issue 10, finding 1).
    with pytest.raises(UsageError):
        usage_from_openai(usage)


def test_usage_at_the_bound_is_accepted() -> None:
    usage = usage_from_openai({"prompt_tokens": MAX_TOKENS_PER_FIELD, "completion_tokens": MAX_TOKENS_PER_FIELD})
    assert usage == Usage(prompt_tokens=MAX_TOKENS_PER_FIELD, completion_tokens=MAX_TOKENS_PER_FIELD)


def test_the_token_bound_is_far_above_every_known_context_window(table: PriceTable) -> None:
    document = json.loads(resources.files("haimaker.accounting").joinpath("prices.json").read_text())
    largest = max(int(entry.get("max_input_tokens") or 0) for entry in document["models"].values())
    assert MAX_TOKENS_PER_FIELD >= 10 * largest


def test_every_bounded_usage_at_the_dearest_bundled_price_is_within_the_cost_bound() -> None:
    # The cost bound only catches a nonsense price (a config typo), never real usage at a real price.
    document = json.loads(resources.files("haimaker.accounting").joinpath("prices.json").read_text())
    table = PriceTable.from_json_entries(document["models"])
    dearest = max(
        (table.lookup(name) for name in document["models"]),
        key=lambda price: price.output_cost_per_token if price else Decimal(0),
    )
    assert dearest is not None
    worst = Usage(prompt_tokens=3 * MAX_TOKENS_PER_FIELD, completion_tokens=MAX_TOKENS_PER_FIELD)
    check_billable(dearest, worst)
    assert cost_nanos(dearest, worst) <= MAX_REQUEST_COST_NANOS


def test_a_cost_beyond_the_bound_is_refused() -> None:
    absurd_price = ModelPrice(Decimal(1), Decimal(1))  # one dollar per token: a config mistake
    with pytest.raises(UsageError):
        check_billable(absurd_price, Usage(prompt_tokens=600_000, completion_tokens=600_000))
    check_billable(absurd_price, Usage(prompt_tokens=10, completion_tokens=5))  # $15: dear but possible
    check_billable(None, Usage(prompt_tokens=MAX_TOKENS_PER_FIELD))  # unpriced: costs nothing


@pytest.mark.parametrize(
    ("name", "same_as"),
    [
        ("bedrock/anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("bedrock/converse/us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude-3-5-sonnet"),
        ("eu.anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("apac.anthropic.claude-sonnet-4-20250514-v1:0", "claude-sonnet-4"),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", "claude-sonnet-4-5"),
        ("us-gov.anthropic.claude-3-haiku-20240307-v1:0", "claude-3-haiku"),
        ("anthropic.claude-opus-4-1-20250805-v1:0", "claude-opus-4-1"),
        ("anthropic.claude-v2:1", "claude-v2"),
    ],
)
def test_bedrock_ids_of_claude_are_priced_as_anthropic_prices_them(table: PriceTable, name: str, same_as: str) -> None:
    expected = table.lookup(same_as)
    assert expected is not None
    assert table.lookup(name) == expected


@pytest.mark.parametrize(
    "name",
    ["bedrock/amazon.nova-pro-v1:0", "bedrock/meta.llama3-1-70b-instruct-v1:0", "mistral.mistral-large-2402-v1:0"],
)
def test_bedrock_ids_of_other_vendors_stay_unpriced(table: PriceTable, name: str) -> None:
    # The table's same-named models are other hosts' prices (Groq, Mistral's API), not Bedrock's.
    assert table.lookup(name) is None
