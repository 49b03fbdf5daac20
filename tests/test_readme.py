"""The README runs top to bottom: every fenced block, in order, against proxies this test starts.

A reader follows the README in order, so the blocks run in order and later blocks see what earlier ones did (the
customer the SDK example bills was created two blocks before). How each kind of block runs:

- `bash` blocks of `curl` commands run through bash against the walk-through proxy: `haimaker --config
  examples/config.yaml` (the README's first command), started from a copy of that file in a temporary directory so
  its SQLite store, journal and store id land there. The only rewrite: `localhost:4000` / `0.0.0.0:4000` become the
  proxy's free port. `curl` is wrapped in a shell function that adds `-sS` and prints each answer's status after
  it; every answer must be a 2xx, and the fields the README promises are checked.
- `python` blocks run with this venv's python (the openai SDK), with the same port rewrite; what a `# comment` on a
  `print` says it prints is checked.
- the `yaml` block (the config reference) is written to disk as is and passed to `haimaker config check`; then a
  proxy runs it on a fresh PostgreSQL database with its `os.environ/` variables set, and every model group answers
  through fake upstreams. Rewrite (the README's deployments point at the real providers): each deployment's
  `api_base` is set to the fake of its provider, and `vertex_credentials` to a service account that fake trusts.
- the CLI synopsis runs each command in the walk-through proxy's directory (the server line is the proxy itself);
  `import-litellm` runs against a LiteLLM-shaped PostgreSQL database into a stopped haimaker's store, then again.
- the blocks `.ci/run` executes itself (install, test command) and the blocks that are maps, not commands, are
  listed in `NOT_RUN_HERE` with their reason. A block that is neither run nor listed fails the test, so a new block
  cannot slip in unexecuted.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.importer.litellm_db import litellm_database, plain_url
from tests.support.databases import temporary_database
from tests.support.fakes import FakeAzureOpenAI, FakeOpenAI
from tests.support.fakes.anthropic import FakeAnthropic
from tests.support.fakes.bedrock import ACCESS_KEY_ID as BEDROCK_ACCESS_KEY_ID
from tests.support.fakes.bedrock import SECRET_ACCESS_KEY as BEDROCK_SECRET_ACCESS_KEY
from tests.support.fakes.bedrock import FakeBedrock
from tests.support.fakes.gemini import FakeGoogle
from tests.support.process import ProxyProcess, proxy_process

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV_BIN = Path(sys.executable).parent
README_PORT = re.compile(r"\b(?:localhost|0\.0\.0\.0):4000\b")
# Prints each answer's status after its body; the README's commands are otherwise run as written.
CURL_WRAPPER = "curl() { command curl -sS -w '\\n@@status %{http_code}\\n' \"$@\"; }\n"
STATUS_LINE = re.compile(r"\n@@status (\d{3})\n")

# Blocks run elsewhere or not commands at all, matched by their whole text: an edited block is looked at again.
NOT_RUN_HERE = {
    "python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e '.[test]' && .venv/bin/haimaker --config "
    "examples/config.yaml\n": "the install is .ci/run's (checked below); the server start is the walk-through proxy",
    ".venv/bin/coverage run -m pytest && .venv/bin/coverage combine -q && .venv/bin/coverage report\n": (
        ".ci/run's last line (checked below)"
    ),
}
LAYOUT_HEAD = "src/haimaker/\n"  # the package map: its names are checked against the tree instead


@dataclass(frozen=True, slots=True)
class Block:
    """One fenced block of the README."""

    language: str
    text: str
    line: int  # of the opening fence, 1-based


def readme_blocks(text: str) -> list[Block]:
    """Every fenced block, in order (a fence opens with ``` and an optional language, closes with ```)."""
    blocks = []
    for match in re.finditer(r"^```(\w*)\n(.*?)^```$", text, re.M | re.S):
        blocks.append(Block(match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1))
    return blocks


def answers(output: str) -> list[tuple[int, Any]]:
    """The (status, JSON body) of each wrapped `curl` call in a block's output."""
    parts = STATUS_LINE.split(output)
    return [(int(parts[i + 1]), json.loads(parts[i])) for i in range(0, len(parts) - 1, 2)]


class Walkthrough:
    """The state the README builds as it goes: the proxies, their directories, the fakes."""

    def __init__(self, tmp_path: Path, proxy: ProxyProcess, litellm_url: str, reference_db_url: str) -> None:
        self.tmp_path = tmp_path
        self.proxy = proxy
        self.directory = tmp_path / "walkthrough"
        self.litellm_url = litellm_url
        self.reference_db_url = reference_db_url

    def env(self) -> dict[str, str]:
        return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"}

    def localize(self, text: str) -> str:
        return README_PORT.sub(f"127.0.0.1:{self.proxy.port}", text)

    def bash(self, script: str, *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", "set -euo pipefail\n" + script],
            cwd=cwd or self.directory,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    # ---- the kinds of block ------------------------------------------------------------------------------------

    def run_curl(self, block: Block) -> None:
        result = self.bash(CURL_WRAPPER + self.localize(block.text))
        assert result.returncode == 0, f"README line {block.line}: {result.stderr}"
        replies = answers(result.stdout)
        assert len(replies) == block.text.count("curl "), result.stdout
        for status, body in replies:
            assert 200 <= status < 300, f"README line {block.line}: {status} {body}"
        check_curl_answers(block, replies)

    def run_python(self, block: Block) -> None:
        result = subprocess.run(
            [sys.executable, "-c", self.localize(block.text)],
            cwd=self.directory,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"README line {block.line}: {result.stderr}"
        promised = [m.group(1) for m in re.finditer(r"^print\(.*\)\s+# (.+)$", block.text, re.M)]
        assert result.stdout.splitlines() == promised

    def run_synopsis(self, block: Block) -> None:
        """`haimaker --config config.yaml [...]`: the server is the walk-through proxy; the other lines run."""
        server, *commands = block.text.splitlines()
        assert server.startswith("haimaker --config config.yaml [--host 0.0.0.0] [--port 4000]")
        for command in commands:
            line = command.split("#", 1)[0].strip()
            result = self.bash(line)
            assert result.returncode == 0, f"{line}: {result.stdout}{result.stderr}"
            if "--version" in line:
                assert re.fullmatch(r"haimaker \d+\.\d+\.\d+\S*\n", result.stdout), result.stdout

    def run_import(self, block: Block) -> None:
        """`haimaker import-litellm` into a stopped haimaker's store (as the README says), then twice again."""
        (command,) = block.text.splitlines()
        assert command.endswith(" [--dry-run]")
        store = self.tmp_path / "imported"
        store.mkdir()
        (store / "config.yaml").write_text((REPO / "examples" / "config.yaml").read_text())
        source = "postgresql://user:password@host:5432/litellm"
        assert source in command
        first = command.removesuffix(" [--dry-run]").replace(source, shlex.quote(self.litellm_url))
        # What the README says each run prints: what it took, "nothing changed" again, nothing written dry.
        for arguments, promised in (
            ("", r"\n  customers: [1-9]\d* new, 0 updated, 0 unchanged\n"),
            ("", r"\nnothing changed: "),
            (" --dry-run", r"\ndry run: nothing was written\n"),
        ):
            result = self.bash(first + arguments, cwd=store)
            assert result.returncode == 0, result.stdout + result.stderr
            assert re.search(promised, result.stdout), result.stdout

    def run_reference_config(self, block: Block) -> None:
        directory = self.tmp_path / "reference"
        directory.mkdir()
        (directory / "config.yaml").write_text(block.text)
        with contextlib.ExitStack() as stack:
            openai_fake = stack.enter_context(FakeOpenAI())
            azure_fake = stack.enter_context(FakeAzureOpenAI())
            anthropic_fake = stack.enter_context(FakeAnthropic())
            google = stack.enter_context(FakeGoogle(project="my-project", location="europe-west4"))
            bedrock = stack.enter_context(FakeBedrock(region="us-east-1"))
            env = {
                "HAIMAKER_MASTER_KEY": "sk-readme-reference-master",
                "DATABASE_URL": self.reference_db_url,
                "OPENAI_API_KEY": str(openai_fake.api_key),
                "AZURE_API_KEY": str(azure_fake.api_key),
                "ANTHROPIC_API_KEY": str(anthropic_fake.api_key),
                "GEMINI_API_KEY": str(google.api_key),
                # Bedrock's credentials come from "the standard AWS chain": its environment variables, nothing else.
                "AWS_ACCESS_KEY_ID": BEDROCK_ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": BEDROCK_SECRET_ACCESS_KEY,
                "AWS_CONFIG_FILE": str(directory / "no-aws-config"),
                "AWS_SHARED_CREDENTIALS_FILE": str(directory / "no-aws-credentials"),
            }
            check = subprocess.run(
                [sys.executable, "-m", "haimaker", "config", "check", "--config", "config.yaml"],
                cwd=directory,
                env={**os.environ, **env},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert check.returncode == 0, check.stdout + check.stderr
            assert check.stdout.startswith("config OK: 7 deployments"), check.stdout
            # The rewrite: every deployment's api_base is its provider's fake; Vertex AI's service account is one
            # the fake trusts (the README names a file on the reader's machine).
            service_account = directory / "vertex-sa.json"
            service_account.write_text(json.dumps(google.service_account(project_id="my-project")))
            fakes = {
                "openai": openai_fake.base_url,
                "azure": azure_fake.url,
                "anthropic": anthropic_fake.base_url,
                "gemini": google.url,
                "vertex_ai": google.url,
                "bedrock": bedrock.url,
            }
            config = yaml.safe_load(block.text)
            for deployment in config["model_list"]:
                params = deployment["litellm_params"]
                provider = params["model"].split("/", 1)[0]
                if provider in fakes:
                    params["api_base"] = fakes[provider]
                if "vertex_credentials" in params:
                    params["vertex_credentials"] = str(service_account)
            proxy = stack.enter_context(proxy_process(directory, config, name="served", env=env))
            http = stack.enter_context(httpx.Client(base_url=proxy.url, timeout=30))
            headers = {"Authorization": f"Bearer {env['HAIMAKER_MASTER_KEY']}"}
            ready = http.get("/health/readiness").json()
            assert ready["status"] == "healthy" and ready["db"] == "connected"
            # Each group twice: a group of two deployments (round-robin) reaches both, or one of them twice.
            for model in sorted({d["model_name"] for d in config["model_list"]}) * 2:
                body = {"model": model, "user": "reference", "messages": [{"role": "user", "content": "hi"}]}
                reply = http.post("/v1/chat/completions", json=body, headers=headers)
                assert reply.status_code == 200, f"{model}: {reply.text}"
                assert reply.json()["choices"][0]["message"]["content"]
            served = {
                "gpt-4o-mini": len(openai_fake.requests) + len(azure_fake.requests),
                "claude-sonnet": len(anthropic_fake.requests),
                "gemini-flash": len(google.generation_requests()),
                "claude-bedrock": len(bedrock.requests),
            }
            assert served == dict.fromkeys(served, 2)


def check_curl_answers(block: Block, replies: list[tuple[int, Any]]) -> None:
    """What the README says these calls answer."""
    bodies = [body for _, body in replies]
    if "/chat/completions" in block.text and "/customer/info" in block.text:
        completion, info = bodies
        assert completion["object"] == "chat.completion" and completion["choices"][0]["message"]["content"]
        assert info["user_id"] == "ishaan3" and info["spend"] > 0  # counted as soon as the response was sent
    elif "/budget/new" in block.text:
        budget, customer = bodies
        assert budget["budget_id"] == "my-free-tier"
        assert customer["user_id"] == "my-customer-id" and customer["budget_id"] == "my-free-tier"
    elif "/key/generate" in block.text:
        (key,) = bodies
        assert key["key"].startswith("sk-") and key["key_alias"] == "web-app"


def check_layout(block: Block) -> None:
    """Each module and folder the layout names exists."""
    package = REPO / "src" / "haimaker"
    for line in block.text.splitlines()[1:]:
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        for name in re.findall(r"[\w.]+/?", names):
            assert (package / name.rstrip("/")).exists(), f"README layout names {name}, not in src/haimaker/"


def check_ci_runs(block: Block) -> None:
    """The blocks left to .ci/run are really in it."""
    ci = (REPO / ".ci" / "run").read_text()
    if block.text.startswith(".venv/bin/coverage"):
        assert block.text.strip() in ci.splitlines()
    else:
        assert "python3 -m venv .venv" in ci and "pip install -q -c constraints.txt -e '.[test]'" in ci


def handler_for(block: Block, walk: Walkthrough) -> Callable[[Block], None]:
    if block.text in NOT_RUN_HERE:
        return check_ci_runs
    if block.text.startswith(LAYOUT_HEAD):
        return check_layout
    if block.language == "bash" and all(
        line.startswith(("curl ", "  -")) for line in block.text.splitlines() if line.strip()
    ):
        return walk.run_curl
    if block.language == "python":
        return walk.run_python
    if block.language == "yaml" and block.text.startswith("model_list:"):
        return walk.run_reference_config
    if block.language == "" and block.text.startswith("haimaker --config config.yaml ["):
        return walk.run_synopsis
    if block.language == "" and block.text.startswith("haimaker import-litellm "):
        return walk.run_import
    pytest.fail(f"README block at line {block.line} is neither run by tests/test_readme.py nor listed in NOT_RUN_HERE")


@pytest.fixture
async def litellm_url(tmp_path: Path) -> AsyncIterator[str]:
    async with litellm_database(tmp_path) as url:
        yield url


@pytest.fixture
async def reference_db_url(tmp_path: Path) -> AsyncIterator[str]:
    async with temporary_database("postgres", tmp_path) as url:
        yield plain_url(url)


@pytest.fixture
def walkthrough_proxy(tmp_path: Path) -> Iterator[ProxyProcess]:
    """`haimaker --config examples/config.yaml`, from a copy of the file (its store lands beside the copy)."""
    config = yaml.safe_load((REPO / "examples" / "config.yaml").read_text())
    (tmp_path / "walkthrough").mkdir()
    with proxy_process(tmp_path / "walkthrough", config, name="config") as proxy:
        yield proxy


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_every_readme_block_runs_in_order(
    tmp_path: Path, walkthrough_proxy: ProxyProcess, litellm_url: str, reference_db_url: str
) -> None:
    walk = Walkthrough(tmp_path, walkthrough_proxy, litellm_url, reference_db_url)
    blocks = readme_blocks(README.read_text())
    handlers = [handler_for(block, walk) for block in blocks]  # an unknown block fails before anything runs
    for block, handler in zip(blocks, handlers, strict=True):
        handler(block)


def test_a_readme_block_neither_run_nor_listed_fails_the_test() -> None:
    walk = Walkthrough.__new__(Walkthrough)  # never started: the block is refused before anything runs
    (block,) = readme_blocks("Text\n\n```bash\nrm -rf /tmp/nothing\n```\n")
    with pytest.raises(pytest.fail.Exception, match="line 3 is neither run"):
        handler_for(block, walk)
