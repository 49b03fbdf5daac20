"""Shared fixtures: real proxies on loopback, real fake upstreams, real databases."""

from __future__ import annotations

import os

from hypothesis import settings

# The fixtures every folder shares; the helpers themselves are imported as `tests.support.<module>`.
pytest_plugins = ["tests.support.databases", "tests.support.redis_servers"]


# Property tests explore new examples on a developer's machine (and keep the failures they find in .hypothesis/);
# under CI they run a fixed, derandomized set, so a run's verdict depends on the code, never on the draw.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")
