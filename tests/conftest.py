"""Shared fixtures: real proxies on loopback, real fake upstreams, real databases."""

from __future__ import annotations

import sys
from pathlib import Path

# tests/ is not a package; make `support` and `fakes` importable by name.
sys.path.insert(0, str(Path(__file__).parent))
