"""Helpers for the shared-state tests: recording sinks, a durable-spend stand-in, limits and demands."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime

from haimaker.money import Nanos
from haimaker.state.counters import Demand, Limits, SpendReset
from haimaker.state.redis import RedisCounters

MakeCounters = Callable[..., RedisCounters]


class RecordedResets:
    """A `SpendResetSink` that keeps what it is given."""

    def __init__(self) -> None:
        self.resets: list[SpendReset] = []

    def reset_customer(self, reset: SpendReset) -> None:
        self.resets.append(reset)


class DurableSpend:
    """A `SpendSource` over a dict, counting how often it is read."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[Nanos, datetime | None]] = {}
        self.reads = 0
        self.fail = False

    async def __call__(self, customer_id: str) -> tuple[Nanos, datetime | None]:
        self.reads += 1
        if self.fail:
            raise OSError("database unreachable")
        return self.rows.get(customer_id, (0, None))


def limits(customer_id: str = "alice", /, **fields: object) -> Limits:
    """Limits with every field unset except those given."""
    values: dict[str, object] = {
        "budget_id": None,
        "max_budget": None,
        "soft_budget": None,
        "rpm_limit": None,
        "tpm_limit": None,
        "max_parallel_requests": None,
        "budget_duration": None,
        "budget_reset_at": None,
    }
    values.update(fields)
    return Limits(customer_id=customer_id, **values)  # type: ignore[arg-type]


def decode_hash(raw: Mapping[bytes | str, bytes | str]) -> dict[str, int]:
    """A counters hash as ints (the period key left out)."""
    out: dict[str, int] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        if name != "per":
            out[name] = int(value)
    return out


def demand(cost: Nanos = 1_000, tokens: int = 10) -> Demand:
    return Demand(cost=cost, tokens=tokens)


class CuttableLink:
    """A TCP relay to a server that a test can cut (every connection dropped, new ones refused) and restore:
    a network partition between one instance and Redis, while Redis itself keeps its data."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def open(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        await asyncio.gather(*self._relays, return_exceptions=True)

    async def restore(self) -> None:
        await self.open()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        task.add_done_callback(self._relays.discard)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update((writer, up_writer))
