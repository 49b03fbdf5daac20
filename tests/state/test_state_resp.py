"""ScriptClient, the multiplexed script connection, against real Redis (a private server where a test breaks it)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from haimaker.state.redis import connect
from haimaker.state.resp import ScriptClient
from tests.support.process import free_port
from tests.support.redis_servers import private_redis

ECHO = "return {KEYS[1], ARGV[1]}"
SPIN = "local t = redis.call('TIME') local until_ms = t[1] * 1000 + t[2] / 1000 + tonumber(ARGV[1]) " + (
    "repeat t = redis.call('TIME') until t[1] * 1000 + t[2] / 1000 >= until_ms return 1"
)


@contextlib.asynccontextmanager
async def _clients(url: str, *, timeout_s: float = 5.0) -> AsyncIterator[tuple[Redis, ScriptClient]]:
    """A redis-py client and a ScriptClient made like it (the test scripts registered), both closed after."""
    redis = connect(url)
    scripts = ScriptClient.like(redis)
    scripts._timeout_s = timeout_s
    scripts.register("echo", ECHO)
    scripts.register("spin", SPIN)
    scripts.register("fail", "return redis.error_reply('budget script refused')")
    try:
        yield redis, scripts
    finally:
        scripts.disconnect()
        await redis.aclose()


@contextlib.contextmanager
def _redis_server(*args: str) -> Iterator[None]:
    """A `redis-server` of the test's own with extra arguments (no TCP port, no persistence), killed after."""
    executable = shutil.which("redis-server")
    assert executable is not None, "redis-server is not installed"
    command = [executable, "--port", "0", "--save", "", "--appendonly", "no", *args]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        server.kill()
        server.wait(10)


async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply(redis_url: str) -> None:
    async with _clients(redis_url) as (redis, scripts):
        before = int((await redis.info("clients"))["connected_clients"])
        replies = await asyncio.gather(*(scripts.run("echo", [f"k{i}"], [i]) for i in range(2_000)))
        assert replies == [[f"k{i}".encode(), str(i).encode()] for i in range(2_000)]
        assert int((await redis.info("clients"))["connected_clients"]) <= before + 1


async def test_an_error_reply_fails_only_its_own_call(redis_url: str) -> None:
    async with _clients(redis_url) as (_, scripts):
        results = await asyncio.gather(
            scripts.run("echo", ["a"], [1]),
            scripts.run("fail", ["b"], []),
            scripts.run("echo", ["c"], [3]),
            return_exceptions=True,
        )
        assert results[0] == [b"a", b"1"] and results[2] == [b"c", b"3"]
        assert isinstance(results[1], ResponseError) and "budget script refused" in str(results[1])


async def test_scripts_are_loaded_again_after_a_restart_and_a_lost_connection_is_reported(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        async with _clients(server.url) as (_, scripts):
            assert await scripts.run("echo", ["k"], [1]) == [b"k", b"1"]
            server.stop()
            with pytest.raises(RedisConnectionError):
                await scripts.run("echo", ["k"], [2])
            server.start()  # an empty server: its script cache is empty too (NOSCRIPT, then SCRIPT LOAD)
            assert await scripts.run("echo", ["k"], [3]) == [b"k", b"3"]


async def test_a_late_reply_times_out_and_the_next_call_gets_a_fresh_connection(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        async with _clients(server.url, timeout_s=0.1) as (_, scripts):
            slow = asyncio.ensure_future(scripts.run("spin", ["k"], [400]))
            queued = asyncio.ensure_future(scripts.run("echo", ["k"], [1]))
            with pytest.raises(RedisTimeoutError):
                await slow
            # The call behind it on the same connection cannot be matched to its reply any more: it fails too.
            with pytest.raises((RedisConnectionError, RedisTimeoutError)):
                await queued
            await asyncio.sleep(0.5)  # the script ends; Redis answers again
            assert await scripts.run("echo", ["k"], [2]) == [b"k", b"2"]


async def test_password_and_database_come_from_the_client_url(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        admin = connect(server.url)
        await admin.config_set("requirepass", "s3cret")
        await admin.aclose()
        url = server.url.replace("redis://", "redis://:s3cret@").rsplit("/", 1)[0] + "/3"
        async with _clients(url) as (redis, scripts):
            scripts.register("dbsize", "redis.call('SET', KEYS[1], '1') return redis.call('DBSIZE')")
            assert await scripts.run("dbsize", ["in-db-3"], []) == 1
            assert await redis.exists("in-db-3") == 1  # redis-py on the same URL sees the key: same database
        async with _clients(url.replace(":s3cret@", ":wrong@")) as (redis, wrong):
            for _ in range(2):  # refused at AUTH each time, never served on an unauthenticated connection (NOAUTH)
                with pytest.raises(ResponseError, match="WRONGPASS"):
                    await wrong.run("echo", ["k"], [1])


async def test_a_unix_socket_url_is_followed(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    with _redis_server("--unixsocket", str(socket_path)):
        for _ in range(200):
            if socket_path.exists():
                break
            await asyncio.sleep(0.02)
        async with _clients(f"unix://{socket_path}?db=2") as (redis, scripts):
            assert await scripts.run("echo", ["k"], [7]) == [b"k", b"7"]
            scripts.register("mark", "redis.call('SET', KEYS[1], '1') return 1")
            await scripts.run("mark", ["over-the-socket"], [])
            assert await redis.exists("over-the-socket") == 1  # same server, same database as redis-py


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (openssl, as Debian ships it)."""
    cert, key = directory / "redis.crt", directory / "redis.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_a_tls_url_is_verified_against_its_ca(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    port = free_port()
    tls = ("--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    with _redis_server(*tls, "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"):
        async with _clients(f"rediss://localhost:{port}/0?ssl_ca_certs={cert}") as (_, scripts):
            for _ in range(200):
                try:
                    assert await scripts.run("echo", ["k"], [9]) == [b"k", b"9"]
                    break
                except RedisConnectionError:
                    await asyncio.sleep(0.02)  # still starting
            else:
                pytest.fail("TLS redis-server did not answer")
        # A client that does not trust the certificate is refused, not silently connected.
        async with _clients(f"rediss://localhost:{port}/0") as (_, untrusting):
            with pytest.raises(RedisConnectionError):
                await untrusting.run("echo", ["k"], [1])
