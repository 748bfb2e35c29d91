"""The packed exchange's own connections (app/backends/redis/link.py), on a real server:
the same answers and failures as over a redis-py connection (error replies, a timeout,
a connection closed mid-exchange, a cancellation), a link reused while fresh and pinged
when idle, the pool's credentials and database honoured, at most MAX_LINKS per pool."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MovedError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.backends.redis import link as link_module
from app.backends.redis.exchange import Kept, packed_exchange
from app.backends.redis.link import Links, calls_pool, linkable
from tests.conftest import flush

PING = b"*1\r\n$4\r\nPING\r\n"
QUIT = b"*1\r\n$4\r\nQUIT\r\n"


def command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%b\r\n" % (len(p), p) for p in parts)


def pool_of(url: str, **options: Any) -> BlockingConnectionPool:
    settings: dict[str, Any] = {"max_connections": 16, "timeout": 2, "socket_timeout": 2,
                                "health_check_interval": 1}  # fmt: skip
    return BlockingConnectionPool.from_url(url, **{**settings, **options})


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    flush(redis_url)
    redis = Redis.from_pool(pool_of(redis_url))
    try:
        yield redis
    finally:
        await redis.aclose()


def links_of(kept: Kept) -> Links:
    assert kept.links is not None
    return kept.links


async def test_a_packed_exchange_goes_over_a_link_reused_without_a_checkout(
    client: Redis,
) -> None:
    kept, pool = Kept(), client.connection_pool
    links = links_of(kept)
    answers = await packed_exchange(client, [PING, command(b"SET", b"k", b"v"),
                                             command(b"GET", b"k")], kept)  # fmt: skip
    assert answers == [b"PONG", b"OK", b"v"]
    [first] = links._idle[pool]
    for _ in range(3):
        assert await packed_exchange(client, [PING], kept) == [b"PONG"]
    assert links._idle[pool] == [first] and links._open[pool] == 1
    assert pool._in_use_connections == set() and not kept._idle  # (no redis-py connection)
    await kept.close()


async def test_error_replies_are_each_commands_own_answer_as_redis_py_maps_them(
    client: Redis,
) -> None:
    kept = Kept()
    await client.set("text", "x")
    over_links = await packed_exchange(client, [
        command(b"NOSUCHCOMMAND"), PING, command(b"INCR", b"text"),
    ], kept)  # fmt: skip
    plain = Kept(links=False)
    over_redis_py = await packed_exchange(client, [
        command(b"NOSUCHCOMMAND"), PING, command(b"INCR", b"text"),
    ], plain)  # fmt: skip
    assert [type(a) for a in over_links] == [type(a) for a in over_redis_py]
    assert [str(a) for a in over_links] == [str(a) for a in over_redis_py]
    assert isinstance(over_links[0], ResponseError) and over_links[1] == b"PONG"
    # A reply redis-py's table maps to its own class keeps that class.
    moved = link_module.BaseParser.parse_error("MOVED 3999 127.0.0.1:6381")
    assert isinstance(moved, MovedError)
    assert links_of(kept)._idle[client.connection_pool]  # error replies keep the link
    await kept.close()
    await plain.close()


async def test_a_timed_out_exchange_answers_a_timeout_and_closes_its_link(
    redis_url: str,
) -> None:
    flush(redis_url)
    client = Redis.from_pool(pool_of(redis_url, socket_timeout=0.25))
    kept = Kept()
    pool = client.connection_pool
    try:
        blpop = command(b"BLPOP", b"nothing", b"1")
        [answer] = await packed_exchange(client, [blpop], kept)
        assert isinstance(answer, RedisTimeoutError)
        assert "no reply within 0.25 s" in str(answer)
        assert not links_of(kept)._idle.get(pool)
        # A batch waits PIPELINE_TIMEOUTS call timeouts in all; its answered commands
        # keep their replies.
        answers = await packed_exchange(client, [PING, blpop, PING], kept)
        assert answers[0] == b"PONG"
        assert all(isinstance(a, RedisTimeoutError) for a in answers[1:])
        assert "no reply within 0.5 s" in str(answers[1])
        assert await packed_exchange(client, [PING], kept) == [b"PONG"]
        async def closed() -> bool:  # (the closed links' connection_lost)
            return links_of(kept)._open[pool] <= 1

        await until(closed, "the timed-out links closed")
    finally:
        await kept.close()
        await client.aclose()


async def test_a_link_closed_mid_exchange_answers_the_rest_with_connection_errors(
    client: Redis,
) -> None:
    kept, pool = Kept(), client.connection_pool
    answers = await packed_exchange(client, [PING, QUIT, PING, PING], kept)
    assert answers[:2] == [b"PONG", b"OK"]
    assert all(isinstance(a, RedisConnectionError) for a in answers[2:]), answers
    assert not links_of(kept)._idle.get(pool)
    assert await packed_exchange(client, [PING], kept) == [b"PONG"]
    await kept.close()


async def test_a_link_the_server_closed_while_idle_is_never_used(client: Redis) -> None:
    kept, pool = Kept(), client.connection_pool
    await packed_exchange(client, [command(b"CLIENT", b"SETNAME", b"doomed")], kept)
    [doomed] = links_of(kept)._idle[pool]
    lost = asyncio.get_running_loop().create_future()
    original = doomed.connection_lost

    def seen(exc: Exception | None) -> None:
        original(exc)
        lost.set_result(None)

    doomed.connection_lost = seen  # type: ignore[method-assign]  # (before the kill)
    assert doomed.transport is not None
    host, port = doomed.transport.get_extra_info("sockname")[:2]
    await client.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
    await asyncio.wait_for(lost, 5)
    assert doomed.lost is not None
    assert doomed not in links_of(kept)._idle.get(pool, [])
    assert await packed_exchange(client, [PING], kept) == [b"PONG"]
    await kept.close()


async def test_a_link_idle_past_the_health_interval_is_pinged_and_replaced_if_dead(
    client: Redis, redis_url: str,
) -> None:
    kept, pool = Kept(), client.connection_pool
    links = links_of(kept)
    stats = Redis.from_url(redis_url)  # (no health checks of its own: no PING)
    await packed_exchange(client, [PING], kept)
    [first] = links._idle[pool]
    first.used -= 5  # idle for longer than the pool's health check interval (1 s)
    await stats.config_resetstat()
    assert await packed_exchange(client, [command(b"ECHO", b"x")], kept) == [b"x"]
    assert (await stats.info("commandstats"))["cmdstat_ping"]["calls"] == 1
    await stats.aclose()
    assert links._idle[pool] == [first]
    # One that died meanwhile (closed, its loss not yet seen): its ping fails, it is
    # closed, and a new link serves the call.
    first.used -= 5
    first.close()
    assert await packed_exchange(client, [PING], kept) == [b"PONG"]
    assert first.lost is not None and links._idle[pool] and links._idle[pool][0] is not first
    await kept.close()


async def blocked_clients(client: Redis) -> int:
    return int((await client.info("clients"))["blocked_clients"])


async def until(check: Any, what: str, timeout: float = 10) -> None:
    """Wait (polling the server) until ``await check()`` is true."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"never: {what}"
        await asyncio.sleep(0.01)


async def test_a_cancelled_exchange_closes_its_link(client: Redis) -> None:
    kept, pool = Kept(), client.connection_pool
    call = asyncio.ensure_future(
        packed_exchange(client, [command(b"BLPOP", b"nothing", b"0")], kept)
    )
    async def blocked() -> bool:
        return await blocked_clients(client) >= 1

    async def unblocked() -> bool:
        return await blocked_clients(client) == 0

    await until(blocked, "the link's BLPOP reached the server")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert not links_of(kept)._idle.get(pool)
    await until(unblocked, "the server saw the link closed")
    assert await packed_exchange(client, [PING], kept) == [b"PONG"]
    await kept.close()


async def test_at_most_max_links_then_redis_py_connections(
    client: Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(link_module, "MAX_LINKS", 2)
    kept, pool = Kept(), client.connection_pool
    blpop = command(b"BLPOP", b"list", b"5")
    calls = [asyncio.ensure_future(packed_exchange(client, [blpop], kept)) for _ in range(4)]
    async def all_blocked() -> bool:  # two over links, two over redis-py's
        return await blocked_clients(client) >= 4

    await until(all_blocked, "four BLPOPs reached the server")
    assert len(pool._in_use_connections) >= 2
    assert links_of(kept)._open[pool] == 2
    await client.rpush("list", "a", "b", "c", "d")
    answers = [answer for [answer] in await asyncio.gather(*calls)]
    assert sorted(a[1] for a in answers) == [b"a", b"b", b"c", b"d"]
    await kept.close()


def test_only_a_plain_tcp_resp2_pool_is_linkable(redis_url: str) -> None:
    assert linkable(pool_of(redis_url))
    assert linkable(pool_of("redis://user:secret@127.0.0.1:1/3?client_name=x"))
    assert not linkable(pool_of("rediss://127.0.0.1:1/0"))
    assert not linkable(pool_of("unix:///tmp/redis.sock"))
    assert not linkable(pool_of(redis_url, protocol=3))
    assert not linkable(pool_of(redis_url, decode_responses=True))


async def test_a_link_authenticates_names_itself_and_selects_the_pools_database(
    tmp_path: Any,
) -> None:
    from tests.support import free_port

    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
         "--requirepass", "s3cret", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = Redis.from_pool(pool_of(f"redis://:s3cret@127.0.0.1:{port}/3?client_name=cb"))
        for _ in range(200):
            try:
                await client.ping()
                break
            except RedisConnectionError:
                await asyncio.sleep(0.05)
        kept = Kept()
        name = command(b"CLIENT", b"GETNAME")
        answers = await packed_exchange(client, [command(b"SET", b"k", b"v"), name], kept)
        assert answers == [b"OK", b"cb"]
        assert await client.get("k") == b"v"  # database 3, as the pool's connections
        other = Redis(port=port, password="s3cret", db=0)
        assert await other.get("k") is None
        await other.aclose()
        # Refused credentials fail the exchange as a failed checkout does (RedisNodes
        # answers every command of it with the error).
        wrong = Redis.from_pool(pool_of(f"redis://:wrong@127.0.0.1:{port}/0"))
        with pytest.raises(RedisConnectionError, match="refused the connection"):
            await packed_exchange(wrong, [PING], kept)
        assert not links_of(kept)._open.get(wrong.connection_pool)
        await kept.close()
        await client.aclose()
        await wrong.aclose()
    finally:
        server.terminate()
        server.wait(10)


async def test_a_nodes_links_are_a_share_of_its_connection_setting(redis_url: str) -> None:
    """CORKBOARD_REDIS_MAX_CONNECTIONS bounds what a process opens to a node: the calls
    pool gives up the links' share (a quarter, at most MAX_LINKS; none below 4)."""
    for setting, pool_size, share in ((64, 56, 8), (16, 12, 4), (5, 4, 1), (3, 3, 0)):
        pool = calls_pool(redis_url, max_connections=setting)
        assert (pool.max_connections, pool.corkboard_links) == (pool_size, share)  # type: ignore[attr-defined]
    flush(redis_url)
    client = Redis.from_pool(calls_pool(redis_url, max_connections=3, timeout=2))
    kept = Kept()
    assert await packed_exchange(client, [PING], kept) == [b"PONG"]
    assert not links_of(kept)._open.get(client.connection_pool)  # no share: redis-py's
    assert kept._idle[client.connection_pool] or client.connection_pool._available_connections
    await kept.close()
    await client.aclose()


async def test_a_reply_nothing_asked_for_closes_the_link(client: Redis) -> None:
    """A stream out of step with its commands cannot be read further: the link is
    closed and never used again (the bytes come from the test, the link is real)."""
    kept, pool = Kept(), client.connection_pool
    await packed_exchange(client, [PING], kept)
    [link] = links_of(kept)._idle[pool]
    link.data_received(b"+PONG\r\n")
    assert link.lost is not None and "nothing asked for" in str(link.lost)
    assert await packed_exchange(client, [PING], kept) == [b"PONG"]
    assert links_of(kept)._idle[pool][0] is not link
    await kept.close()


async def test_a_reply_redis_py_treats_as_a_broken_connection_fails_the_rest(
    client: Redis,
) -> None:
    """A LOADING reply (redis-py: a ConnectionError) answers its command and the ones
    after it with that error, and closes the link, as over a redis-py connection."""
    kept, pool = Kept(), client.connection_pool
    await packed_exchange(client, [PING], kept)
    [link] = links_of(kept)._idle[pool]
    call = asyncio.ensure_future(packed_exchange(client, [
        command(b"BLPOP", b"nothing", b"5"), PING,
    ], kept))  # fmt: skip

    async def blocked() -> bool:
        return await blocked_clients(client) >= 1

    await until(blocked, "the BLPOP reached the server")
    link.data_received(b"-LOADING Redis is loading the dataset in memory\r\n")
    answers = await call
    assert all(isinstance(a, RedisConnectionError) for a in answers), answers
    assert "loading" in str(answers[0]).lower()
    assert link.lost is not None and link not in links_of(kept)._idle.get(pool, [])
    assert await packed_exchange(client, [PING], kept) == [b"PONG"]
    await kept.close()
