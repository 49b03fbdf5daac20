"""Several real `haimaker` processes in front of the `mock/` provider, sharing one PostgreSQL database and one Redis
key prefix: what a deployment behind a load balancer runs.

    with started(tmp_path, cluster_config(database_url, redis_url, prefix)) as instances:
        async with connected(instances, database_url) as cluster:
            await cluster.burst("hot", 300)      # spread over the instances
            cluster.kill(1)                      # kill -9
            await cluster.stored_charges("hot")  # request_id -> spend, from the database

The durable store is read directly (spend logs and customer rows), so assertions do not depend on any instance.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from tests.support.process import free_port

MASTER_KEY = "sk-test-master-1234"
# 1 µ$ per prompt token, 10 µ$ per completion token: exact in nano-dollars.
INPUT_COST = 0.000001
OUTPUT_COST = 0.00001
REPLY = "alpha beta gamma delta epsilon"
MAX_TOKENS = 5


@dataclass(frozen=True)
class Deployment:
    """What the instances of one cluster share: a PostgreSQL database and a Redis key prefix."""

    database_url: str
    redis_url: str
    prefix: str


def cluster_config(
    database_url: str, redis_url: str, prefix: str, *, latency_ms: float = 20, **general: Any
) -> dict[str, Any]:
    """The one config every instance runs: a priced mock model (and a slow twin), PostgreSQL, Redis."""

    def model(name: str, latency: float) -> dict[str, Any]:
        return {
            "model_name": name,
            "litellm_params": {
                "model": "mock/gpt-3.5-turbo",
                "mock_response": REPLY,
                "mock_latency_ms": latency,
                "input_cost_per_token": INPUT_COST,
                "output_cost_per_token": OUTPUT_COST,
            },
        }

    return {
        "model_list": [model("priced", latency_ms), model("slow", 1500)],
        "general_settings": {
            "master_key": MASTER_KEY,
            "database_url": database_url.replace("postgresql+asyncpg://", "postgresql://"),
            "redis_url": redis_url,
            "redis_key_prefix": prefix,
            **general,
        },
    }


def chat_body(user: str, model: str = "priced") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": MAX_TOKENS, "user": user}


def haimaker_command() -> list[str]:
    script = Path(sys.executable).with_name("haimaker")
    return [str(script)] if script.exists() else [sys.executable, "-m", "haimaker"]


@dataclass
class Instance:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Answer:
    """One response as the client saw it."""

    instance: int
    status: int
    body: dict[str, Any]
    call_id: str | None
    cost: float | None
    at: float  # when the answer arrived (time.monotonic())
    sent: float = 0.0  # when the request was sent

    @property
    def error_type(self) -> str | None:
        error = self.body.get("error")
        return error.get("type") if isinstance(error, dict) else None


@dataclass
class ProxyCluster:
    instances: list[Instance]
    clients: list[httpx.AsyncClient]
    database_url: str
    killed: set[int] = field(default_factory=set)

    def kill(self, index: int) -> None:
        """kill -9: no graceful shutdown, no drain of pending spend writes."""
        self.instances[index].process.send_signal(signal.SIGKILL)
        self.instances[index].process.wait(10)
        self.killed.add(index)

    async def chat(self, index: int, user: str, model: str = "priced") -> Answer:
        """One chat request on one instance; a transport error is recorded as status 0."""
        sent = time.monotonic()
        try:
            response = await self.clients[index].post("/v1/chat/completions", json=chat_body(user, model))
        except httpx.TransportError as exc:
            return Answer(index, 0, {"error": {"type": type(exc).__name__}}, None, None, time.monotonic(), sent)
        cost = response.headers.get("x-litellm-response-cost")
        return Answer(
            index,
            response.status_code,
            response.json(),
            response.headers.get("x-litellm-call-id") if response.status_code == 200 else None,
            float(cost) if cost is not None else None,
            time.monotonic(),
            sent,
        )

    async def burst(self, user: str, count: int, model: str = "priced") -> list[Answer]:
        """`count` simultaneous requests, spread round-robin over the live instances."""
        live = [i for i in range(len(self.instances)) if i not in self.killed]
        return await asyncio.gather(*(self.chat(live[n % len(live)], user, model) for n in range(count)))

    async def sustained(
        self, user: str, *, workers: int, seconds: float, events: Sequence[tuple[float, Callable[[], None]]] = ()
    ) -> list[Answer]:
        """`workers` clients sending back to back for `seconds`, over the live instances; `events` (blocking
        actions such as a kill) run in a thread at their offsets from the start."""
        started = time.monotonic()
        answers: list[Answer] = []

        async def worker(n: int) -> None:
            while time.monotonic() - started < seconds:
                live = [i for i in range(len(self.instances)) if i not in self.killed]
                answers.append(await self.chat(live[n % len(live)], user))
                n += 1

        async def timeline() -> None:
            for offset, action in events:
                await asyncio.sleep(max(0.0, started + offset - time.monotonic()))
                await asyncio.to_thread(action)

        await asyncio.gather(timeline(), *(worker(n) for n in range(workers)))
        return answers

    async def admin(self, index: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = await self.clients[index].post(path, json=body)
        assert response.status_code == 200, response.text
        result: dict[str, Any] = response.json()
        return result

    async def query(self, sql: str, **params: Any) -> Sequence[Any]:
        engine = create_async_engine(self.database_url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                return (await connection.execute(text(sql), params)).all()
        finally:
            await engine.dispose()

    async def stored_charges(self, user: str) -> dict[str, int]:
        """request_id -> spend (nano-dollars) of the successful spend logs of a customer."""
        rows = await self.query(
            "SELECT request_id, spend FROM spend_logs WHERE end_user = :user AND status = 'success'", user=user
        )
        return {row[0]: int(row[1]) for row in rows}

    async def stored_spend(self, user: str) -> int:
        rows = await self.query("SELECT spend FROM customers WHERE user_id = :user", user=user)
        return int(rows[0][0]) if rows else 0

    async def settled_charges(self, user: str, expected: int, timeout_s: float = 10.0) -> dict[str, int]:
        """The stored charges once at least `expected` are written (the recorders write every 100 ms)."""
        deadline = time.monotonic() + timeout_s
        while True:
            charges = await self.stored_charges(user)
            if len(charges) >= expected or time.monotonic() > deadline:
                return charges
            await asyncio.sleep(0.1)


def _spawn(config_path: Path, port: int, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "PORT")}
    with log.open("wb") as out:
        return subprocess.Popen(
            [*haimaker_command(), "--config", str(config_path), "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
        )


def _wait_ready(instances: list[Instance], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(instances)
    with httpx.Client(timeout=2) as http:
        while pending:
            instance = pending[0]
            if instance.process.poll() is not None:
                raise RuntimeError(f"haimaker exited at startup:\n{instance.log.read_text()[-4000:]}")
            try:
                if http.get(f"{instance.url}/health/readiness").status_code == 200:
                    pending.pop(0)
                    continue
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"haimaker did not start in {timeout_s:.0f}s:\n{instance.log.read_text()[-4000:]}")
            time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@contextmanager
def started(directory: Path, config: dict[str, Any], *, size: int = 3) -> Iterator[list[Instance]]:
    """Start `size` instances of one config, each on its own port, and stop them (SIGTERM) afterwards."""
    config_path = directory / "cluster.yaml"
    config_path.write_text(yaml.safe_dump(config))
    instances: list[Instance] = []
    try:
        for index in range(size):
            port = free_port()
            log = directory / f"instance-{index}.log"
            instances.append(Instance(_spawn(config_path, port, log, directory), port, log))
        _wait_ready(instances)
        yield instances
    finally:
        for instance in instances:
            if instance.process.poll() is None:
                instance.process.send_signal(signal.SIGTERM)
        for instance in instances:
            _stop(instance.process)


@asynccontextmanager
async def connected(instances: list[Instance], database_url: str) -> AsyncIterator[ProxyCluster]:
    """HTTP clients on every instance (the master key), for one test's event loop."""
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    base_url=instance.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=30, limits=limits
                )
            )
            for instance in instances
        ]
        yield ProxyCluster(instances, clients, database_url)
