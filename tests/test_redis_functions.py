"""The Redis scripts as one Functions library (app/backends/redis/library.py): loaded at
start, named after its source, loaded again where a server lost it, and a server
without Redis Functions refused at start with the version it needs."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from app.backends import backend_from_url
from app.backends.base import Backend
from app.backends.redis.library import load_library
from app.errors import BackendUnavailable
from app.settings import Settings
from tests.conftest import flush, need_redis_binaries
from tests.support import RedisServer


@asynccontextmanager
async def started(url: str, **settings: Any) -> AsyncIterator[Backend]:
    """A Redis backend on ``url``, started (its library loaded) and closed after."""
    backend = backend_from_url(url, Settings(backend=url, **settings))
    try:
        await backend.start()
        yield backend
    finally:
        await backend.close()


@pytest.fixture
async def admin(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client of the test server, to look at what the backend stored."""
    flush(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def no_functions_server() -> Iterator[RedisServer]:
    """A real redis-server whose FUNCTION command is renamed away: to a client it is a
    server from before Redis Functions (6.x) answering "unknown command"."""
    need_redis_binaries()  # a skip, or a failure under CORKBOARD_REQUIRE_REDIS=1
    server = RedisServer(extra=("--rename-command", "FUNCTION", "")).start()
    try:
        yield server
    finally:
        server.cleanup()


def test_the_library_is_named_after_its_source() -> None:
    library = load_library()
    assert library.source.startswith(f"#!lua name={library.name}\n")
    assert library.name.startswith("cb_") and len(library.name) == 3 + 16
    assert load_library() == library  # the same scripts, the same name
    assert library.functions["kv_put"] == f"{library.name}_kv_put"
    assert all(name.startswith(library.name + "_") for name in library.functions.values())


async def test_start_loads_the_library_and_calls_go_through_fcall(
    redis_url: str, admin: aioredis.Redis,
) -> None:
    library = load_library()
    try:
        await admin.function_delete(library.name)
    except redis.ResponseError:
        pass  # not loaded yet
    async with started(redis_url) as backend:
        names = [dict(zip(entry[::2], entry[1::2], strict=True))[b"library_name"]
                 for entry in await admin.function_list(library.name)]
        assert names == [library.name.encode()]
        await admin.config_resetstat()
        await backend.kv_put("default", "k", b"1")
        assert (await backend.kv_get("default", "k")) is not None
        stats = await admin.info("commandstats")
        assert stats["cmdstat_fcall"]["calls"] >= 2
        assert "cmdstat_evalsha" not in stats


async def test_a_library_of_another_version_is_left_alone(
    redis_url: str, admin: aioredis.Redis,
) -> None:
    """Two versions of Corkboard on one Redis (a rolling upgrade): each calls its own
    library, and loading one does not replace the other."""
    other = "#!lua name=cb_0000000000000000\n" + (
        "redis.register_function('cb_0000000000000000_kv_read', "
        "function(keys, args) return 'old' end)\n"
    )
    await admin.function_load(other, replace=True)
    try:
        async with started(redis_url) as backend:
            await backend.kv_put("default", "k", b"2")
            entry = await backend.kv_get("default", "k")
            assert entry is not None and entry.value == b"2"
            assert await admin.fcall("cb_0000000000000000_kv_read", 1, "x") == b"old"
    finally:
        await admin.function_delete("cb_0000000000000000")


async def test_a_server_without_functions_is_refused_at_start(
    no_functions_server: RedisServer,
) -> None:
    with pytest.raises(BackendUnavailable, match=r"Redis 7\.0 or later"):
        async with started(no_functions_server.url):
            pass


async def test_a_call_after_the_library_is_deleted_loads_it_again(
    redis_url: str, admin: aioredis.Redis,
) -> None:
    """The one library deleted under a running backend (FUNCTION DELETE, or a restart
    without persistence): the next calls load it again and run once each."""
    async with started(redis_url) as backend:
        await backend.kv_put("default", "n", b"0")
        await admin.function_delete(load_library().name)
        for i in range(1, 4):
            result = await backend.kv_increment("default", "n", 1)
            assert result.entry.value == str(i).encode()
        assert len(await admin.function_list(load_library().name)) == 1


async def test_a_library_that_cannot_be_loaded_again_answers_503_and_changes_nothing(
) -> None:
    """The library gone and the server refusing to load it again (here: past its
    ``maxmemory``, which refuses FUNCTION LOAD): each call answers backend_unavailable
    and writes nothing; once the server takes the library, calls load it and run."""
    need_redis_binaries()
    server = RedisServer().start()
    try:
        async with started(server.url) as backend:
            await backend.kv_put("default", "k", b"1")
            admin = redis.Redis.from_url(server.url)
            try:
                admin.function_delete(load_library().name)
                admin.config_set("maxmemory", 1)
                for call in (backend.kv_put("default", "k", b"2"),
                             backend.kv_put("default", "new", b"1"),
                             backend.kv_get("default", "k")):
                    with pytest.raises(BackendUnavailable, match="Function not found"):
                        await call
                assert admin.function_list() == []
                admin.config_set("maxmemory", 0)
                entry = await backend.kv_get("default", "k")
                assert entry is not None and (entry.value, entry.revision) == (b"1", 1)
                assert await backend.kv_get("default", "new") is None
                assert (await backend.kv_put("default", "k", b"3")).entry.revision == 2
                assert len(admin.function_list(load_library().name)) == 1
            finally:
                admin.close()
    finally:
        server.cleanup()


async def test_a_log_from_before_byte_accounting_is_counted_at_its_next_event(
    redis_url: str, admin: aioredis.Redis,
) -> None:
    """A namespace whose log has events but no sizes (``logn``) and no byte counter
    (``eb``), as written before byte accounting: its next event counts them all once,
    itself included; the events after it add only their own."""
    ns, log = "old", "cb:{old}:log"
    async with started(redis_url) as backend:
        for i in range(3):
            await backend.kv_put(ns, f"k{i}", b'"v"')
        await admin.delete("cb:{old}:logn")
        await admin.hdel("cb:{old}:quota", "eb")
        for i in range(3, 5):
            await backend.kv_put(ns, f"k{i}", b'"v"')
            rows = await admin.xrange(log, "-", "+")
            sizes = [sum(len(k) + len(v) for k, v in fields.items()) for _, fields in rows]
            logn = await admin.lrange("cb:{old}:logn", 0, -1)
            assert [int(s.split(b":")[-1]) for s in logn] == sizes
            assert int(await admin.hget("cb:{old}:quota", "eb")) == sum(sizes)
        assert len(sizes) == 5


async def test_history_is_cut_to_its_depth_and_its_bytes_leave_the_quota(
    redis_url: str, admin: aioredis.Redis,
) -> None:
    """Each write past the history depth drops the oldest kept revision, and the quota
    counts exactly the kept revisions' values; lowering the depth cuts older lists too."""
    writes = 0
    for depth in (3, 2):
        async with started(redis_url, key_history=depth) as backend:
            for i in range(6):
                await backend.kv_put("h", "k", b'"%s"' % (b"x" * (i + depth * 10)))
                writes += 1
                history = await backend.kv_history("h", "k")
                assert len(history) == min(writes, depth)
                used = int(await admin.hget("cb:{h}:quota", "b"))
                assert used == sum(len(e.value) for e in history)


async def test_a_user_without_scripting_is_refused_at_start_naming_the_refusal(
    redis_url: str, admin: aioredis.Redis,
) -> None:
    """A Redis user that may not load functions (no ``@scripting``): the start fails
    with 503 backend_unavailable carrying Redis's NOPERM, not as a server too old."""
    await admin.execute_command(
        "ACL", "SETUSER", "noscript", "on", ">pw", "~*", "+@all", "-@scripting")
    parts = urllib.parse.urlsplit(redis_url)
    limited = parts._replace(netloc=f"noscript:pw@{parts.hostname}:{parts.port}").geturl()
    try:
        with pytest.raises(BackendUnavailable, match=r"(?i)noperm|permission") as caught:
            async with started(limited):
                pass
        assert "7.0" not in str(caught.value)
        assert ":pw@" not in str(caught.value)  # the password is never shown
    finally:
        await admin.execute_command("ACL", "DELUSER", "noscript")


async def test_the_stream_is_trimmed_every_sixteen_drops_and_at_once_for_large_events(
    redis_url: str, admin: aioredis.Redis,
) -> None:
    """The stream keeps at most 15 dropped events (each under 4 KiB) past the cut, plus
    what a node holds: with nodes of 2 entries, never more than retention + 15 + 2
    events stored, and it does get trimmed; dropped events of 4 KiB or more are trimmed
    at once (never more than retention + 2 stored)."""
    ns, log = "cadence", "cb:{cadence}:log"
    before = (await admin.config_get("stream-node-max-entries"))["stream-node-max-entries"]
    await admin.config_set("stream-node-max-entries", 2)
    try:
        async with started(redis_url, event_retention=10) as backend:
            stored = []
            for i in range(100):
                await backend.kv_put(ns, "k", b"%d" % i)
                stored.append(await admin.xlen(log))
            assert max(stored) <= 10 + 15 + 2, stored
            assert min(stored[20:]) <= 10 + 2, stored  # trimmed, not only bounded
            big = b'"' + b"x" * 4200 + b'"'
            for _ in range(30):
                await backend.kv_put(ns, "big", big)
            for _ in range(12):
                await backend.kv_put(ns, "big", big)
                assert await admin.xlen(log) <= 10 + 2
            batch = await backend.read_events(ns, 0)
            assert len(batch.events) == 10
            assert batch.events[0].revision == batch.compacted_revision + 1
    finally:
        await admin.config_set("stream-node-max-entries", before)


async def test_the_log_is_trimmed_by_whole_nodes_and_reads_start_at_its_first_kept_event(
    redis_url: str, admin: aioredis.Redis,
) -> None:
    """At retention each write drops one event: 'logn' names the first kept one, reads
    start there (the compacted revision is exact), and the stream is trimmed by whole
    nodes (XTRIM MINID ~), so it stores at most one node's worth past the cut. A log whose
    'logn' holds plain sizes (the layout before) is trimmed exactly until they are gone."""
    ns, log, logn = "trim", "cb:{trim}:log", "cb:{trim}:logn"
    async with started(redis_url, event_retention=10) as backend:
        for i in range(250):
            await backend.kv_put(ns, f"k{i % 3}", b"%d" % i)
        batch = await backend.read_events(ns, 0)
        assert batch.compacted_revision == 240 and batch.current_revision == 250
        assert [e.revision for e in batch.events] == list(range(241, 251))
        for after, want in ((239, 241), (240, 241), (245, 246)):
            got = (await backend.read_events(ns, after)).events
            assert [e.revision for e in got] == list(range(want, 251)), after
        stored = await admin.xlen(log)
        # At most one node (100 events) and the drops since the last trim (< 16) past it.
        assert 10 <= stored <= 10 + 100 + 15, stored
        assert (await admin.lindex(logn, 0)).startswith(b"241:")
        # The layout before: plain sizes. Exact trimming until they are popped.
        sizes = [item.split(b":")[1] for item in await admin.lrange(logn, 0, -1)]
        await admin.xtrim(log, maxlen=10)
        await admin.delete(logn)
        await admin.rpush(logn, *sizes)
        for i in range(5):
            await backend.kv_put(ns, "k", b"%d" % i)
            assert await admin.xlen(log) == 10
            batch = await backend.read_events(ns, 0)
            assert batch.compacted_revision == 241 + i
            assert [e.revision for e in batch.events] == list(range(242 + i, 252 + i))
        for i in range(20):
            await backend.kv_put(ns, "k", b"%d" % i)
        batch = await backend.read_events(ns, 0)
        assert batch.compacted_revision == 265 and batch.events[0].revision == 266
