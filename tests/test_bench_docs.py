"""Every file and module the benchmark's documents cite exists: bench/README.md and bench/RESULTS.md (the report a
run prints and writes is checked in test_bench_report.py).

A path is cited as `bench/x.py`, `docs/y.md`, `tests/...`, `examples/...`, or relative to the citing document's folder
(`RESULTS.md` in bench/README.md) or to the package (`state/resp.py`); a module as `python -m bench.x`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCUMENTS = (REPO / "bench" / "README.md", REPO / "bench" / "RESULTS.md")
# A relative file name with a known extension; not the tail of an absolute path (`/tmp/r.md` is the reader's).
CITED_FILE = re.compile(r"(?<![\w/.~-])((?:[\w-]+/)*[\w-]+\.(?:py|md|sh|conf|yaml|yml|json|toml|txt|ini))\b")
CITED_MODULE = re.compile(r"\bpython -m (bench\.\w+)")


def missing_citations(text: str, folder: Path) -> list[str]:
    """The files and modules `text` cites that exist nowhere it could mean."""
    roots = (REPO, folder, REPO / "src" / "haimaker")
    missing = [path for path in CITED_FILE.findall(text) if not any((root / path).is_file() for root in roots)]
    for module in CITED_MODULE.findall(text):
        if not (REPO / (module.replace(".", "/") + ".py")).is_file():
            missing.append(module)
    return missing


def test_the_citation_check_catches_a_file_that_does_not_exist() -> None:
    text = "Targets come from DESIGN.md; see `bench/gone.py`, `state/resp.py`, /tmp/r.md and `python -m bench.nope`."
    assert missing_citations(text, REPO / "bench") == ["DESIGN.md", "bench/gone.py", "bench.nope"]


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_file_the_bench_documents_cite_exists(document: Path) -> None:
    assert missing_citations(document.read_text(), document.parent) == []
