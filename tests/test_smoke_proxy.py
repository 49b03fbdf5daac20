from __future__ import annotations

from pathlib import Path

import openai

from tests.support.proxy import base_config, running_proxy


def test_chat_completion_through_openai_sdk_with_mock_model(tmp_path: Path) -> None:
    with running_proxy(tmp_path, base_config()) as proxy:
        with openai.OpenAI(base_url=proxy.url + "/v1", api_key=proxy.master_key) as client:
            reply = client.chat.completions.create(
                model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}], user="cust-1"
            )
        assert reply.choices[0].message.content
        assert reply.usage is not None and reply.usage.completion_tokens > 0
