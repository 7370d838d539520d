"""The stock store's script client against a real Redis, and against loopback servers that misbehave."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable

import hiredis
import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_errors

from service.stock.wire import ScriptClient

ECHO = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}"


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[ScriptClient]:
    scripts = ScriptClient(redis_url)
    yield scripts
    await scripts.close()


async def test_runs_a_script_the_server_has_not_cached_then_by_sha(
    redis_url: str, client: ScriptClient
) -> None:
    plain = aioredis.Redis.from_url(redis_url)
    await plain.script_flush()
    assert await client.evalsha(sha(ECHO), ECHO, ["k{a}"], ["v", 41]) == [b"k{a}", b"v", 42]
    assert (await plain.script_exists(sha(ECHO))) == [True]
    assert await client.evalsha(sha(ECHO), ECHO, ["k2"], ["w", -2]) == [b"k2", b"w", -1]
    await plain.aclose()


async def test_uses_the_database_the_url_names(redis_url: str) -> None:
    other = redis_url.rsplit("/", 1)[0] + "/13"
    plain = aioredis.Redis.from_url(other)
    await plain.delete("wire:n")
    scripts = ScriptClient(other)
    text = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
    assert await scripts.evalsha(sha(text), text, ["wire:n"], [5]) == 5
    assert await plain.get("wire:n") == b"5"
    await plain.delete("wire:n")
    await plain.aclose()
    await scripts.close()


async def test_concurrent_calls_get_their_own_replies(client: ScriptClient) -> None:
    replies = await asyncio.gather(
        *(client.evalsha(sha(ECHO), ECHO, [f"k{i}"], [str(i), i]) for i in range(300))
    )
    assert replies == [[f"k{i}".encode(), str(i).encode(), i + 1] for i in range(300)]


async def test_a_cancelled_call_does_not_shift_the_replies_of_later_ones(client: ScriptClient) -> None:
    first = asyncio.ensure_future(client.evalsha(sha(ECHO), ECHO, ["a"], ["a", 1]))
    await asyncio.sleep(0)
    first.cancel()
    assert await client.evalsha(sha(ECHO), ECHO, ["b"], ["b", 2]) == [b"b", b"b", 3]


async def test_a_script_error_is_a_response_error(client: ScriptClient) -> None:
    bad = "return redis.error_reply('ERR the script said no')"
    with pytest.raises(redis_errors.ResponseError, match="the script said no"):
        await client.evalsha(sha(bad), bad, [], [])
    # the connection is still in step afterwards
    assert await client.evalsha(sha(ECHO), ECHO, ["c"], ["c", 0]) == [b"c", b"c", 1]


async def test_commands_sent_together_answer_in_order_and_an_error_reply_raises(
    redis_url: str, client: ScriptClient
) -> None:
    plain = aioredis.Redis.from_url(redis_url)
    await plain.set("wire:s", "text")
    await plain.delete("wire:n")
    together = [hiredis.pack_command(("INCRBY", "wire:n", n)) for n in (1, 2, 3)]
    assert await client.commands(together) == [1, 3, 6]
    # an error reply among them raises once every reply has arrived: the connection stays in step
    wrong = [hiredis.pack_command(("INCR", "wire:s")), hiredis.pack_command(("INCRBY", "wire:n", 4))]
    with pytest.raises(redis_errors.ResponseError, match="not an integer"):
        await client.commands(wrong)
    assert await plain.get("wire:n") == b"10"
    assert await client.commands([hiredis.pack_command(("GET", "wire:n"))]) == [b"10"]
    await plain.delete("wire:s", "wire:n")
    await plain.aclose()


async def test_nothing_listening_is_a_connection_error() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    scripts = ScriptClient(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5)
    with pytest.raises(redis_errors.ConnectionError):
        await scripts.evalsha(sha(ECHO), ECHO, ["k"], ["v", 1])


async def _misbehaving_server(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
) -> tuple[asyncio.Server, str]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # the command
        result = handle(reader, writer)
        if asyncio.iscoroutine(result):
            await result

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"


async def test_a_silent_server_times_out_every_waiting_call() -> None:
    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server, url = await _misbehaving_server(hang)
    scripts = ScriptClient(url, reply_timeout=0.3)
    calls = [scripts.evalsha(sha(ECHO), ECHO, ["k"], ["v", i]) for i in range(3)]
    outcomes = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 3)
    assert all(isinstance(o, redis_errors.TimeoutError) for o in outcomes), outcomes
    await scripts.close()
    scripts = ScriptClient(url, reply_timeout=0.3)
    packed = [hiredis.pack_command(("EXISTS", "k")), hiredis.pack_command(("MGET", "a", "b"))]
    with pytest.raises(redis_errors.TimeoutError):
        await asyncio.wait_for(scripts.commands(packed), 3)
    await scripts.close()
    server.close()


async def test_a_dropped_connection_fails_the_call_and_the_next_call_reconnects() -> None:
    connections = 0

    def drop_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            writer.transport.abort()
        else:
            writer.write(b"*1\r\n:7\r\n")

    server, url = await _misbehaving_server(drop_first)
    scripts = ScriptClient(url)
    with pytest.raises(redis_errors.ConnectionError):
        await asyncio.wait_for(scripts.evalsha(sha(ECHO), ECHO, ["k"], ["v", 1]), 3)
    assert await asyncio.wait_for(scripts.evalsha(sha(ECHO), ECHO, ["k"], ["v", 1]), 3) == [7]
    assert connections == 2
    await scripts.close()
    server.close()


async def test_a_garbled_reply_is_a_connection_error() -> None:
    def garble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"?this is not RESP\r\n")

    server, url = await _misbehaving_server(garble)
    scripts = ScriptClient(url)
    with pytest.raises(redis_errors.ConnectionError, match="unreadable reply"):
        await asyncio.wait_for(scripts.evalsha(sha(ECHO), ECHO, ["k"], ["v", 1]), 3)
    await scripts.close()
    server.close()


def test_only_redis_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="scheme"):
        ScriptClient("http://127.0.0.1:6379/0")
