"""A TCP relay on a port the test controls: put it between the proxy and a shared server (PostgreSQL), then close it
to make that server unreachable for the proxy alone, and open it again on the same port."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.support.process import free_port


class TcpRelay:
    """Forwards 127.0.0.1:<port> to a target, in a thread of its own (the test's blocking calls cannot stall it)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.port = free_port()
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-relay", daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def open(self) -> None:
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout=10)

    def close(self) -> None:
        """Refuse new connections and cut the open ones (the server looks down)."""
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)

    def stop(self) -> None:
        self.close()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _open(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        self._writers.discard(writer)
        self._writers.discard(up_writer)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, RuntimeError):
        pass
    finally:
        writer.transport.abort()


@contextlib.contextmanager
def tcp_relay(target_host: str, target_port: int) -> Iterator[TcpRelay]:
    relay = TcpRelay(target_host, target_port)
    relay.open()
    try:
        yield relay
    finally:
        relay.stop()
