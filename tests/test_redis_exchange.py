"""Connections kept between exchanges (app/backends/redis/exchange.py; a packed exchange
over redis-py connections: Kept(links=False)), on a real server:
reused while fresh, back to the pool's checked checkout when idle or broken, never
kept with unread replies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.backends.redis import exchange
from app.backends.redis.exchange import Kept, bounded_pipeline, packed_exchange
from tests.conftest import flush

PING = b"*1\r\n$4\r\nPING\r\n"


async def lone_call(client: Redis, packed: bytes, kept: Kept) -> object:
    """One packed command's answer (an error reply is returned, not raised)."""
    [answer] = await packed_exchange(client, [packed], kept)
    return answer


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    flush(redis_url)
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=16, timeout=2,
                                           socket_timeout=2, health_check_interval=1)
    redis = Redis.from_pool(pool)
    try:
        yield redis
    finally:
        await redis.aclose()


async def test_a_fresh_connection_is_reused_without_a_checkout(client: Redis) -> None:
    kept, pool = Kept(links=False), client.connection_pool
    assert await lone_call(client, PING, kept) == b"PONG"
    first = kept._idle[pool][-1][0]
    checkouts = 0
    real = pool.get_connection

    async def counted() -> object:
        nonlocal checkouts
        checkouts += 1
        return await real()

    pool.get_connection = counted  # type: ignore[method-assign]
    for _ in range(5):
        assert await lone_call(client, PING, kept) == b"PONG"
    assert checkouts == 0 and kept._idle[pool][-1][0] is first
    await kept.close()
    assert pool._in_use_connections == set()  # (redis-py's own bookkeeping)


async def test_an_error_reply_keeps_the_connection(client: Redis) -> None:
    kept = Kept(links=False)
    assert isinstance(await lone_call(client, b"*1\r\n$7\r\nNOSUCHC\r\n", kept), ResponseError)
    assert len(kept._idle[client.connection_pool]) == 1
    assert await lone_call(client, PING, kept) == b"PONG"
    await kept.close()


async def test_an_idle_connection_goes_back_to_the_pool(
    client: Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    kept, pool = Kept(links=False), client.connection_pool
    await lone_call(client, PING, kept)
    stale = kept._idle[pool][-1][0]
    monkeypatch.setattr(exchange, "KEEP_IDLE_SECONDS", 0.0)
    assert await lone_call(client, PING, kept) == b"PONG"
    # The stale one went back to the pool, and the call was served by a checkout (the
    # pool hands the same idle connection out again, after its own checks).
    assert stale in pool._available_connections or kept._idle[pool][-1][0] is stale
    await kept.close()


async def test_a_timed_out_batch_is_not_kept(client: Redis) -> None:
    """A batch whose replies were not all read (its time ran out) closes its connection
    instead of keeping it: its late replies must never answer the next exchange."""
    kept, pool = Kept(links=False), client.connection_pool
    pool.connection_kwargs["socket_timeout"] = 0.05
    for connection in pool._available_connections:
        connection.socket_timeout = 0.05
    blocking = [(("BLPOP", "nothing", 1), {})]
    answers = await bounded_pipeline(client, blocking, kept)
    assert isinstance(answers[0], Exception) and "no reply" in str(answers[0])
    assert not kept._idle.get(pool)
    pool.connection_kwargs["socket_timeout"] = 2
    for connection in pool._available_connections:
        connection.socket_timeout = 2
    assert await lone_call(client, PING, kept) == b"PONG"
    await kept.close()


async def test_drop_disconnects_the_kept_connections(client: Redis) -> None:
    kept, pool = Kept(links=False), client.connection_pool
    await asyncio.gather(*(lone_call(client, PING, kept) for _ in range(3)))
    held = [c for c, _ in kept._idle[pool]]
    assert held
    await kept.drop(pool)
    assert not kept._idle.get(pool)
    assert all(not c.is_connected for c in held)
    assert await lone_call(client, PING, kept) == b"PONG"  # a new one from the pool
    await kept.close()


async def test_a_small_pool_keeps_at_most_a_quarter_of_itself(redis_url: str) -> None:
    """A pool of 2 (CORKBOARD_REDIS_MAX_CONNECTIONS' least) keeps none: a caller that
    checks out of it directly never waits on a connection held idle here."""
    for size, most in ((2, 0), (4, 1), (12, 3), (64, 8)):
        pool = BlockingConnectionPool.from_url(redis_url, max_connections=size, timeout=1)
        client, kept = Redis.from_pool(pool), Kept(links=False)
        try:
            await asyncio.gather(*(lone_call(client, PING, kept) for _ in range(min(size, 12))))
            assert len(kept._idle.get(pool, [])) <= most
            if most:
                assert kept._idle[pool]
            await client.ping()  # the pool still serves a direct caller at once
        finally:
            await kept.close()
            await client.aclose()


async def test_a_timed_out_packed_exchange_answers_a_timeout_and_is_not_kept(
    client: Redis,
) -> None:
    """A lone packed command gets the connection's socket timeout; past it, it answers a
    Redis TimeoutError, the connection (whose reply is unread) is closed, not kept, and
    the next call is served."""
    kept, pool = Kept(links=False), client.connection_pool
    await lone_call(client, PING, kept)
    slow = kept._idle[pool][-1][0]
    slow.socket_timeout = 0.05
    blpop = b"*3\r\n$5\r\nBLPOP\r\n$7\r\nnothing\r\n$1\r\n1\r\n"
    answer = await lone_call(client, blpop, kept)
    assert isinstance(answer, RedisTimeoutError) and "no reply within 0.05 s" in str(answer)
    assert not slow.is_connected and not kept._idle.get(pool)
    slow.socket_timeout = 2
    assert await lone_call(client, PING, kept) == b"PONG"
    await kept.close()


async def test_a_connection_closed_mid_exchange_answers_the_rest_with_connection_errors(
    client: Redis,
) -> None:
    """Replies read before the server closed the connection are their commands'
    answers; the commands after it each answer a Redis ConnectionError, and the
    connection is not kept."""
    kept, pool = Kept(links=False), client.connection_pool
    quit_ = b"*1\r\n$4\r\nQUIT\r\n"
    answers = await packed_exchange(client, [PING, quit_, PING, PING], kept)
    assert answers[:2] == [b"PONG", b"OK"]
    assert all(isinstance(a, RedisConnectionError) for a in answers[2:]), answers
    assert not kept._idle.get(pool)
    assert await lone_call(client, PING, kept) == b"PONG"
    await kept.close()
