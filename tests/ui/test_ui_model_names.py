"""Models read as configured (`model_name`), never as the upstream model id spend is recorded under (issue 14):
the spend page's table and chart, a customer's latest requests, the Models page."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.proxy import RunningProxy, base_config, running_proxy
from tests.ui.ui_client import UiClient


def _model(name: str, upstream: str) -> dict[str, object]:
    params = {"model": f"mock/{upstream}", "input_cost_per_token": 0.000001, "output_cost_per_token": 0.000002}
    return {"model_name": name, "litellm_params": params}


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningProxy]:
    """Two model names on one upstream model, and one on its own; one call to each of `house-chat` and `solo`."""
    models = [_model("house-chat", "upstream-chat-v1"), _model("solo", "upstream-solo-v2")]
    models.append(_model("other-chat", "upstream-chat-v1"))
    path: Path = tmp_path_factory.mktemp("ui-model-names")
    with running_proxy(path, base_config(model_list=models)) as proxy:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key=proxy.master_key, max_retries=0) as client:
            for model, user in (("house-chat", "named-1"), ("solo", "named-2")):
                client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], user=user)
        yield proxy


@pytest.fixture
def admin(proxy: RunningProxy) -> Iterator[UiClient]:
    client = UiClient(proxy)
    try:
        assert client.sign_in().status_code == 303
        yield client
    finally:
        client.close()


def test_spend_logs_record_the_upstream_model_and_the_model_group(proxy: RunningProxy) -> None:
    with proxy.client() as api:
        [log] = api.get("/spend/logs", params={"end_user": "named-1"}).json()
    assert (log["model"], log["model_group"]) == ("upstream-chat-v1", "house-chat")


def test_the_spend_page_names_models_as_configured(admin: UiClient) -> None:
    page = html.unescape(admin.get("/ui/spend").text)
    table = page.split('id="models-spend"', 1)[1].split("</table>", 1)[0]
    # The daily rollup knows the upstream model only: the names configured for it read together.
    assert "<td>house-chat / other-chat</td>" in table and "<td>solo</td>" in table
    chart = page.split("Spend per model", 1)[1].split("</svg>", 1)[0]
    assert "house-chat / other-chat" in chart and "solo" in chart
    assert "upstream-" not in page


def test_latest_requests_name_the_model_called(admin: UiClient) -> None:
    page = html.unescape(admin.get("/ui/customers/view", id="named-1").text)
    requests = page.split('id="requests-table"', 1)[1].split("</table>", 1)[0]
    assert "<td>house-chat</td>" in requests
    assert "upstream-" not in requests and "other-chat" not in requests


def test_the_models_page_leads_with_the_model_name(admin: UiClient) -> None:
    page = admin.get("/ui/models").text
    for name in ("house-chat", "other-chat", "solo"):
        assert f"<td><code>{name}</code></td>" in page
