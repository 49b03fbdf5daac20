"""Moving to haimaker from another proxy: reading its database and writing what maps into our store.

source.py   reading a LiteLLM proxy database (PostgreSQL): its budget, end user and key tables, as rows
litellm.py  mapping those rows to our records, writing them (`storage/import_writer.py`), and the report
"""

from __future__ import annotations

from haimaker.importer.litellm import ImportReport, Note, import_litellm
from haimaker.importer.source import LiteLLMSourceError

__all__ = ["ImportReport", "LiteLLMSourceError", "Note", "import_litellm"]
