"""Fake upstreams shared by the tests of one module, reset before every test that asks for them.

A proxy takes about a second to start (migrations, tokenizer), so each module starts its proxy once
(module scope) against module-scoped fakes; the per-test fixtures below hand out the same fakes with
their recordings, scripts and counters cleared, which keeps the tests independent.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fakes import FakeAzureOpenAI, FakeOpenAI


@pytest.fixture(scope="module")
def openai_server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def openai_server_b() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture(scope="module")
def azure_server() -> Iterator[FakeAzureOpenAI]:
    with FakeAzureOpenAI() as fake:
        yield fake


@pytest.fixture
def openai_upstream(openai_server: FakeOpenAI) -> FakeOpenAI:
    openai_server.reset()
    return openai_server


@pytest.fixture
def openai_upstream_b(openai_server_b: FakeOpenAI) -> FakeOpenAI:
    openai_server_b.reset()
    return openai_server_b


@pytest.fixture
def azure_upstream(azure_server: FakeAzureOpenAI) -> FakeAzureOpenAI:
    azure_server.reset()
    return azure_server
