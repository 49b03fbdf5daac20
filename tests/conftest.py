"""Shared fixtures: real proxies on loopback, real fake upstreams, real databases."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import settings

# tests/ is not a package; make `support` and `fakes` importable by name.
sys.path.insert(0, str(Path(__file__).parent))


# Property tests explore new examples on a developer's machine (and keep the failures they find in .hypothesis/);
# under CI they run a fixed, derandomized set, so a run's verdict depends on the code, never on the draw.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI") == "true":
    settings.load_profile("ci")
