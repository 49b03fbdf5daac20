"""The Spend page warns when its figures may be incomplete: charges filed as dead letters (issue 10, finding 1)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx

from tests.support.factories import make_log
from tests.support.proxy import MASTER_KEY, base_config, running_proxy
from tests.ui.ui_client import UiClient


def test_the_spend_page_warns_about_dead_letters_until_they_are_dealt_with(tmp_path: Path) -> None:
    with running_proxy(tmp_path, base_config()) as proxy:
        ui = UiClient(proxy)
        try:
            assert ui.sign_in().status_code == 303
            assert 'id="ledger-warning"' not in ui.get("/ui/spend").text
            assert proxy.loop is not None
            monitor = proxy.state.store_monitor
            assert monitor is not None
            poison = make_log(end_user="bob", start_time=datetime(2026, 1, 1, 12, 0))  # naive: the store refuses it
            proxy.loop.call_soon_threadsafe(proxy.state.recorder.record, poison)
            proxy.call(proxy.state.recorder.flush())
            proxy.call(monitor.check())  # the page shows the monitor's count (checked every 1 s)
            page = ui.get("/ui/spend").text
            assert 'id="ledger-warning"' in page and "1 charge(s) could not be recorded" in page
            admin = {"Authorization": f"Bearer {MASTER_KEY}"}
            [letter] = httpx.get(proxy.url + "/spend/dead_letters", headers=admin, timeout=10).json()["data"]
            httpx.delete(f"{proxy.url}/spend/dead_letters/{letter['id']}", headers=admin, timeout=10)
            proxy.call(monitor.check())
            assert 'id="ledger-warning"' not in ui.get("/ui/spend").text
        finally:
            ui.close()
