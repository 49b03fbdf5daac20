"""The Spend page's figures come from the daily rollup (issue 15): emptying `spend_logs` changes none of them."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from sqlalchemy import text

from tests.support.proxy import RunningProxy, base_config, running_proxy
from tests.ui.ui_client import UiClient

_FIGURES = re.compile(r'id="(?:total-spend|models-spend|top-customers)".*?</(?:span|table)>', re.S)


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    path: Path = tmp_path_factory.mktemp("ui-spend-rollup")
    with running_proxy(path, base_config()) as proxy:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key=proxy.master_key, max_retries=0) as client:
            for user in ("rollup-a", "rollup-b", "rollup-b"):
                client.chat.completions.create(
                    model="gpt-3.5-turbo", messages=[{"role": "user", "content": "Hi"}], user=user
                )
        yield proxy


async def _delete_logs(proxy: RunningProxy) -> int:
    async with proxy.state.db.begin() as connection:
        return int((await connection.execute(text("DELETE FROM spend_logs"))).rowcount)


def test_the_spend_page_reads_rollups_not_spend_logs(proxy: RunningProxy) -> None:
    admin = UiClient(proxy)
    try:
        assert admin.sign_in().status_code == 303
        before = _FIGURES.findall(admin.get("/ui/spend").text)
        assert len(before) == 3 and "rollup-b" in before[2] and "rollup-a" in before[2]
        assert proxy.call(_delete_logs(proxy)) == 3
        assert _FIGURES.findall(admin.get("/ui/spend").text) == before
    finally:
        admin.close()
