"""schemathesis against the management API's OpenAPI document, on a live proxy of each store (issue 10).

Every management operation of the document gets a bounded number of generated requests, valid ones (positive) and
invalid ones (negative), sent with the master key to a real proxy over HTTP. Each response must not be a server
error and must match the document: a status the operation lists, the content type it lists, the body schema. Every
failure is collected (not shrunk, which would cost minutes) and reported together.

The LLM routes are raw ASGI and not in the document; `tests/e2e/test_e2e_llm_fuzz.py` fuzzes them with hypothesis.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Ok

from tests.api.mgmt_support import mgmt_config, proxy_on, run
from tests.support.databases import DatabaseKind, drop_database, make_database_url
from tests.support.proxy import RunningProxy

EXAMPLES_PER_OPERATION = {GenerationMode.POSITIVE: 30, GenerationMode.NEGATIVE: 15}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
MANAGEMENT_PREFIXES = ("/customer/", "/budget/", "/spend/", "/global/", "/end_user/", "/key/")


@dataclass
class FuzzReport:
    examples: int = 0
    server_errors: int = 0
    failures: list[str] = field(default_factory=list)


@pytest.fixture
def fuzzed_proxy(engine_kind: DatabaseKind, tmp_path: Path) -> Iterator[RunningProxy]:
    """A proxy on a fresh database of the session's engine (the fuzzer creates and deletes at will)."""
    url = run(make_database_url(engine_kind, tmp_path))
    try:
        with proxy_on(tmp_path, mgmt_config(url)) as proxy:
            yield proxy
    finally:
        run(drop_database(url))


def _fuzz(proxy: RunningProxy) -> FuzzReport:
    schema = schemathesis.openapi.from_dict(proxy.app.api.openapi())
    report = FuzzReport()
    auth = proxy.headers()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            assert isinstance(result, Ok), result
            operation = result.ok()
            if not operation.path.startswith(MANAGEMENT_PREFIXES):
                continue
            for mode, examples in EXAMPLES_PER_OPERATION.items():
                _fuzz_operation(operation, mode, examples, proxy.url, auth, session, report)
    return report


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    examples: int,
    base_url: str,
    auth: dict[str, str],
    session: requests.Session,
    report: FuzzReport,
) -> None:
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def send(case: Any) -> None:
        report.examples += 1
        response = case.call(base_url=base_url, session=session, headers=auth, timeout=30)
        if response.status_code >= 500:
            report.server_errors += 1
        if response.text == "Invalid HTTP request received.":
            return  # uvicorn refused the request line itself (a negative case's raw bytes): the app never saw it
        try:
            case.validate_response(response, checks=CHECKS, headers=auth)
        except (AssertionError, BaseExceptionGroup) as exc:  # a check failed: collect it, do not shrink it
            checks = " ".join(line.strip("- ") for line in str(exc).splitlines() if line.startswith("- "))
            report.failures.append(
                f"{operation.label} [{mode.value}] {response.status_code} {checks}: {response.text[:200]}"
            )

    with contextlib.suppress(Unsatisfiable):  # no parameters to make invalid (negative mode on `GET /budget/list`)
        send()


def test_the_management_api_answers_as_documented_without_server_errors(
    fuzzed_proxy: RunningProxy, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.CRITICAL, logger="haimaker"):
        report = _fuzz(fuzzed_proxy)
    print(f"schemathesis: {report.examples} examples, {report.server_errors} server errors")
    assert report.examples > 500
    assert report.server_errors == 0, "\n".join(report.failures[:20])
    assert report.failures == [], "\n".join(report.failures)
