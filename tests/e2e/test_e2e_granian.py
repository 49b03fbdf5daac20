"""`haimaker serve --server granian`: the same wire behaviour as the default uvicorn server.

granian is the optional server (bench/RESULTS.md compares the two); these guard what a server swap could break:
streams relayed whole and charged, a client hang-up releasing the upstream, and SIGTERM finishing in-flight work
then exiting cleanly.
"""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from tests.e2e.e2e_stack import openai_deployment, proxy_config
from tests.support.fakes import BEHAVIOR_FIELD, FakeOpenAI
from tests.support.process import proxy_process
from tests.support.proxy import MASTER_KEY

pytestmark = pytest.mark.slow

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "tell me a story"}]
REPLY = "Hello! This is the fake upstream speaking."


def test_granian_streams_charges_releases_hangups_and_stops_cleanly(
    tmp_path: Path, openai_upstream: FakeOpenAI
) -> None:
    config = proxy_config(
        [openai_deployment("gpt-4o", openai_upstream, input_cost_per_token=1e-6, output_cost_per_token=2e-6)]
    )
    with proxy_process(tmp_path, config, args=["--server", "granian"]) as proxy:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key=MASTER_KEY, max_retries=0)
        stream = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, user="alice")
        assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == REPLY

        slow = {BEHAVIOR_FIELD: {"chunk_delay_s": 0.2, "reply": " ".join(["word"] * 100)}}
        hung = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True, extra_body=slow)
        next(iter(hung))
        hung.close()
        openai_upstream.wait_stream_cancelled_sync(timeout_s=2.0)

        in_flight: dict[str, object] = {}
        openai_upstream.behavior = openai_upstream.behavior.replace(delay_s=1.0)

        def slow_call() -> None:
            try:
                reply = client.chat.completions.create(model="gpt-4o", messages=MESSAGES, user="alice")
                in_flight["content"] = reply.choices[0].message.content
            except Exception as exc:  # asserted below
                in_flight["error"] = exc

        caller = threading.Thread(target=slow_call)
        caller.start()
        openai_upstream.wait_until_sync(lambda s: s.in_flight >= 1, timeout_s=10)
        proxy.process.send_signal(signal.SIGTERM)
        caller.join(15)
        assert in_flight.get("content") == REPLY, in_flight
        assert proxy.process.wait(timeout=30) == 0, proxy.log()[-2000:]

    with sqlite3.connect(tmp_path / "haimaker.db") as db:
        charged = db.execute("SELECT count(*), sum(spend) FROM spend_logs WHERE end_user = 'alice'").fetchone()
    assert charged[0] == 2 and charged[1] > 0  # the stream and the call finished during shutdown
