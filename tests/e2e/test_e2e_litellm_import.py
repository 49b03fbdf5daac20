"""Moving from LiteLLM end to end: import a LiteLLM database, start the proxy on the store, call it with the old keys.

Guards the promise of the move (issue 12): an app keeps its LiteLLM virtual key and its `user` values, and its
calls are answered, with the spend added to the key and the customer on top of what LiteLLM had counted.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import openai
import pytest
import yaml

from haimaker.money import nanos_to_usd, usd_to_nanos
from tests.e2e.e2e_stack import mock_deployment, proxy_config, sync_client
from tests.importer import litellm_db as lite
from tests.support.proxy import running_proxy

pytestmark = pytest.mark.postgres  # the LiteLLM database is PostgreSQL

PRICE = {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}
CUSTOMER = "user-046"
# What LiteLLM had counted (see `litellm_db`): the key's $0.420000001 and the customer's 46 x $0.123456789.
KEY_SPEND = 420_000_001
CUSTOMER_SPEND = 5_679_012_294


def _import(config: Path, source: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.endswith("MASTER_KEY") and k != "DATABASE_URL"}
    command = [sys.executable, "-m", "haimaker", "import-litellm", "--from", source, "--config", str(config)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=clean, check=False)


async def test_an_imported_litellm_key_calls_the_proxy_and_its_spend_adds_to_the_key_and_the_customer(
    tmp_path: Path,
) -> None:
    config = proxy_config([mock_deployment("gpt-3.5-turbo", **PRICE)])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    async with lite.litellm_database(tmp_path) as source:
        imported = await asyncio.to_thread(_import, tmp_path / "config.yaml", source)
    assert imported.returncode == 0, imported.stderr

    with running_proxy(tmp_path, config) as proxy:  # the store beside the config: the one just imported into
        key = lite.plaintext_key(lite.PLAIN_KEY)
        with sync_client(proxy, api_key=key) as client:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hello"}], user=CUSTOMER
            )
            assert raw.http_response.status_code == 200
            assert raw.parse().choices[0].message.content
            cost = usd_to_nanos(raw.headers["x-litellm-response-cost"])
            assert cost > 0

        with sync_client(proxy, api_key=lite.plaintext_key(lite.EXPIRED_KEY)) as expired_client:
            with pytest.raises(openai.APIStatusError):  # imported as it was in LiteLLM: expired
                expired_client.chat.completions.create(
                    model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hello"}]
                )

        proxy.call(proxy.state.recorder.flush())
        with proxy.client() as admin:
            customer_info = admin.get("/customer/info", params={"end_user_id": CUSTOMER})
    assert customer_info.status_code == 200, customer_info.text
    assert customer_info.json()["spend"] == pytest.approx(nanos_to_usd(CUSTOMER_SPEND + cost), abs=1e-9)
    # The ledger, once the proxy has stopped: both counts went on from LiteLLM's, in nano-dollars.
    with sqlite3.connect(tmp_path / "haimaker.db") as db:
        (key_spend,) = db.execute(
            "SELECT spend FROM virtual_keys WHERE token = ?", (lite.token_of(lite.PLAIN_KEY),)
        ).fetchone()
        (customer_spend,) = db.execute("SELECT spend FROM customers WHERE user_id = ?", (CUSTOMER,)).fetchone()
    assert key_spend == KEY_SPEND + cost
    assert customer_spend == CUSTOMER_SPEND + cost
