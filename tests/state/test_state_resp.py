"""ScriptClient, the multiplexed script connection, against real Redis (a private server where a test breaks it)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from haimaker.state.redis import connect
from haimaker.state.resp import ScriptClient
from redisdb import free_port, private_redis

ECHO = "return {KEYS[1], ARGV[1]}"
SPIN = "local t = redis.call('TIME') local until_ms = t[1] * 1000 + t[2] / 1000 + tonumber(ARGV[1]) " + (
    "repeat t = redis.call('TIME') until t[1] * 1000 + t[2] / 1000 >= until_ms return 1"
)


def _client(url: str, *, timeout_s: float = 5.0) -> tuple[Redis, ScriptClient]:
    redis = connect(url)
    scripts = ScriptClient.like(redis)
    scripts._timeout_s = timeout_s
    scripts.register("echo", ECHO)
    scripts.register("spin", SPIN)
    scripts.register("fail", "return redis.error_reply('budget script refused')")
    return redis, scripts


async def test_concurrent_calls_share_one_connection_and_each_gets_its_own_reply(redis_url: str) -> None:
    redis, scripts = _client(redis_url)
    try:
        before = int((await redis.info("clients"))["connected_clients"])
        replies = await asyncio.gather(*(scripts.run("echo", [f"k{i}"], [i]) for i in range(2_000)))
        assert replies == [[f"k{i}".encode(), str(i).encode()] for i in range(2_000)]
        assert int((await redis.info("clients"))["connected_clients"]) <= before + 1
    finally:
        scripts.disconnect()
        await redis.aclose()


async def test_an_error_reply_fails_only_its_own_call(redis_url: str) -> None:
    redis, scripts = _client(redis_url)
    try:
        results = await asyncio.gather(
            scripts.run("echo", ["a"], [1]),
            scripts.run("fail", ["b"], []),
            scripts.run("echo", ["c"], [3]),
            return_exceptions=True,
        )
        assert results[0] == [b"a", b"1"] and results[2] == [b"c", b"3"]
        assert isinstance(results[1], ResponseError) and "budget script refused" in str(results[1])
    finally:
        scripts.disconnect()
        await redis.aclose()


async def test_scripts_are_loaded_again_after_a_restart_and_a_lost_connection_is_reported(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        redis, scripts = _client(server.url)
        try:
            assert await scripts.run("echo", ["k"], [1]) == [b"k", b"1"]
            server.stop()
            with pytest.raises(RedisConnectionError):
                await scripts.run("echo", ["k"], [2])
            server.start()  # an empty server: its script cache is empty too (NOSCRIPT, then SCRIPT LOAD)
            assert await scripts.run("echo", ["k"], [3]) == [b"k", b"3"]
        finally:
            scripts.disconnect()
            await redis.aclose()


async def test_a_late_reply_times_out_and_the_next_call_gets_a_fresh_connection(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        redis, scripts = _client(server.url, timeout_s=0.1)
        try:
            slow = asyncio.ensure_future(scripts.run("spin", ["k"], [400]))
            queued = asyncio.ensure_future(scripts.run("echo", ["k"], [1]))
            with pytest.raises(RedisTimeoutError):
                await slow
            # The call behind it on the same connection cannot be matched to its reply any more: it fails too.
            with pytest.raises((RedisConnectionError, RedisTimeoutError)):
                await queued
            await asyncio.sleep(0.5)  # the script ends; Redis answers again
            assert await scripts.run("echo", ["k"], [2]) == [b"k", b"2"]
        finally:
            scripts.disconnect()
            await redis.aclose()


async def test_password_and_database_come_from_the_client_url(tmp_path: Path) -> None:
    with private_redis(tmp_path) as server:
        admin = connect(server.url)
        await admin.config_set("requirepass", "s3cret")
        await admin.aclose()
        url = server.url.replace("redis://", "redis://:s3cret@").rsplit("/", 1)[0] + "/3"
        redis, scripts = _client(url)
        try:
            scripts.register("dbsize", "redis.call('SET', KEYS[1], '1') return redis.call('DBSIZE')")
            assert await scripts.run("dbsize", ["in-db-3"], []) == 1
            assert await redis.exists("in-db-3") == 1  # redis-py on the same URL sees the key: same database
        finally:
            scripts.disconnect()
            await redis.aclose()
        redis, wrong = _client(url.replace(":s3cret@", ":wrong@"))
        try:
            for _ in range(2):  # refused at AUTH each time, never served on an unauthenticated connection (NOAUTH)
                with pytest.raises(ResponseError, match="WRONGPASS"):
                    await wrong.run("echo", ["k"], [1])
        finally:
            wrong.disconnect()
            await redis.aclose()


async def test_a_unix_socket_url_is_followed(tmp_path: Path) -> None:
    executable = shutil.which("redis-server")
    assert executable is not None, "redis-server is not installed"
    socket_path = tmp_path / "redis.sock"
    server = subprocess.Popen(
        [executable, "--port", "0", "--unixsocket", str(socket_path), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if socket_path.exists():
                break
            await asyncio.sleep(0.02)
        redis, scripts = _client(f"unix://{socket_path}?db=2")
        try:
            assert await scripts.run("echo", ["k"], [7]) == [b"k", b"7"]
            scripts.register("mark", "redis.call('SET', KEYS[1], '1') return 1")
            await scripts.run("mark", ["over-the-socket"], [])
            assert await redis.exists("over-the-socket") == 1  # same server, same database as redis-py
        finally:
            scripts.disconnect()
            await redis.aclose()
    finally:
        server.kill()
        server.wait(10)


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
    executable = shutil.which("redis-server")
    assert executable is not None, "redis-server is not installed"
    cert, key = _self_signed(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [
            executable, "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file",
            str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"rediss://localhost:{port}/0?ssl_ca_certs={cert}"
        redis, scripts = _client(url)
        try:
            for _ in range(200):
                try:
                    assert await scripts.run("echo", ["k"], [9]) == [b"k", b"9"]
                    break
                except RedisConnectionError:
                    await asyncio.sleep(0.02)  # still starting
            else:
                pytest.fail("TLS redis-server did not answer")
        finally:
            scripts.disconnect()
            await redis.aclose()
        # A client that does not trust the certificate is refused, not silently connected.
        redis, untrusting = _client(f"rediss://localhost:{port}/0")
        try:
            with pytest.raises(RedisConnectionError):
                await untrusting.run("echo", ["k"], [1])
        finally:
            untrusting.disconnect()
            await redis.aclose()
    finally:
        server.kill()
        server.wait(10)
