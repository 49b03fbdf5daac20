"""The vendored assets: htmx matches the version and sha256 recorded in VENDORED.md, and ships as package data."""

from __future__ import annotations

import hashlib
import re
from importlib.resources import files
from xml.etree import ElementTree

from tests.ui.ui_client import UiClient


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


def test_favicon_is_an_svg_linked_from_every_page_and_answers_favicon_ico(ui: UiClient) -> None:
    # Issue 14: a browser asks every host for /favicon.ico; it used to get a 404.
    assert (files("haimaker.ui") / "static" / "favicon.svg").is_file()
    page = ui.get("/ui/login").text
    assert '<link rel="icon" href="/ui/static/favicon.svg" type="image/svg+xml">' in page
    icon = ui.get("/ui/static/favicon.svg")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    ElementTree.fromstring(icon.text)
    legacy = ui.get("/favicon.ico")
    assert legacy.status_code == 301 and legacy.headers["location"] == "/ui/static/favicon.svg"
