"""bench.profile attributes py-spy samples to components by their innermost known frame."""

from __future__ import annotations

from pathlib import Path

from bench.profile import LOOP, component, summarize


def test_the_innermost_known_frame_decides() -> None:
    pipeline_then_tokens = [
        "Runner.run (asyncio/runners.py:118)",
        "HttpToolsProtocol.data_received (uvicorn/protocols/http/httptools_impl.py:174)",
        "Pipeline._admit (haimaker/pipeline.py:169)",
        "TokenCounter._count (haimaker/accounting/tokens.py:319)",
        "Encoding.encode_ordinary (tiktoken/core.py:76)",
    ]
    assert component(pipeline_then_tokens) == "token counting (tpm reservation)"
    assert component(pipeline_then_tokens[:3]) == "pipeline (auth, parse, settle)"
    assert component(pipeline_then_tokens[:2]) == "HTTP server (uvicorn / granian)"
    assert component(["Runner.run (asyncio/runners.py:118)"]) == LOOP


def test_only_main_thread_samples_are_attributed(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(
        "thread (1): MainThread;Runner.run (asyncio/runners.py:118);Pipeline.run (haimaker/pipeline.py:123) 3\n"
        "thread (1): MainThread;Runner.run (asyncio/runners.py:118);Http1Client.post (providers/http1.py:9) 1\n"
        "thread (2): Thread-2 (_connection_worker_thread);_connection_worker_thread (aiosqlite/core.py:63) 50\n"
    )
    counts, total = summarize(raw)
    assert total == 4
    assert counts == {"pipeline (auth, parse, settle)": 3, "upstream HTTP client": 1}
