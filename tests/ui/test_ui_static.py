"""The vendored assets: htmx matches the version and sha256 recorded in VENDORED.md, and ships as package data."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files


def test_vendored_htmx_matches_recorded_sha256() -> None:
    static = files("haimaker.ui") / "static"
    record = (static / "VENDORED.md").read_text()
    row = r"`htmx\.min\.js` \| `htmx\.org` \(npm registry\) \| ([\d.]+) \|.*\| `([0-9a-f]{64})` \|"
    recorded = re.search(row, record)
    assert recorded, "VENDORED.md has no htmx row"
    digest = hashlib.sha256((static / "htmx.min.js").read_bytes()).hexdigest()
    assert digest == recorded.group(2)
    assert f"htmx.org@{recorded.group(1)}" in record


def test_templates_and_styles_are_package_data() -> None:
    ui = files("haimaker.ui")
    for name in ("base.html", "budgets.html", "customers.html", "customer.html", "spend.html", "models.html"):
        assert (ui / "templates" / name).is_file(), name
    assert (ui / "static" / "haimaker.css").is_file()
