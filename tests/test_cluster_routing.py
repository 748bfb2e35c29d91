"""Routing on a Redis Cluster, step by step: a namespace's slot is moved by hand
(IMPORTING/MIGRATING, a few MIGRATEs, SETSLOT NODE) between calls. While its keys are
split between two masters, or all on the target with the slot still importing there,
every script is refused before it touches anything (TRYAGAIN: common.lua's slot probe),
the router sends it again for about a second, then answers 503; single-key commands
follow ASK (without learning it as the slot's owner); once the slot is the target's, the
router follows MOVED (learning it).
"""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest
import redis

from app.backends.redis import RedisBackend
from app.backends.redis.wakeups import WAKE, WAKE_CHANNEL, LockWakeups
from app.errors import BackendUnavailable
from app.syntax import Pattern
from tests.redis_cluster import ClusterNode, RedisCluster, slot_of_namespace


def _keys_in_slot(node: redis.Redis, slot: int) -> list[bytes | str]:
    keys: list[bytes | str] = node.execute_command("CLUSTER GETKEYSINSLOT", slot, 100_000)
    return keys


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key


def _migrate(source: redis.Redis, target: ClusterNode, keys: list[bytes | str]) -> None:
    source.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)


def _tryagains(node: redis.Redis) -> int:
    """TRYAGAIN errors ``node`` answered so far."""
    stats = node.info("errorstats")
    return int(stats.get("errorstat_TRYAGAIN", {}).get("count", 0))


def _dump(nodes: list[redis.Redis], slot: int) -> dict[bytes | str, bytes]:
    """Every key of ``slot`` on the given nodes, with DUMP's bytes (asked with ASKING)."""
    found = {}
    for node in nodes:
        for key in _keys_in_slot(node, slot):
            pipe = node.pipeline(transaction=False)
            pipe.execute_command("ASKING")
            pipe.dump(key)
            found[key] = pipe.execute()[1]
    return found


async def test_scripts_wait_while_a_slot_moves_then_follow_moved(
    redis_cluster: RedisCluster,
) -> None:
    redis_cluster.wait_ok()
    ns = "mv-route"
    slot = slot_of_namespace(ns)
    rev = f"cb:{{{ns}}}:rev"
    masters = redis_cluster.masters()
    source = next(n for n in masters if n.port == redis_cluster.owner_port(slot))
    target = next(n for n in masters if n is not source)
    backend = RedisBackend.from_url(redis_cluster.url)
    await backend.start()
    src, dst = source.client(), target.client()
    try:
        for i in range(5):
            await backend.kv_put(ns, f"k{i}", b"%d" % i)
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source.node_id())
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.node_id())
        keys = _keys_in_slot(src, slot)
        # Half of the keys move, the revision stays: the source refuses every script.
        # Then the revision moves too: the source answers ASK, and the target (sent
        # several scripts at once, each after its own ASKING) refuses them all.
        for moved in ([k for k in keys if _text(k) != rev][::2], [rev]):
            _migrate(src, target, moved)
            before = _dump([src, dst], slot)
            # Writes, reads, listings, pattern deletes: a key may be on either master.
            every = Pattern.compile("k*")
            started = time.monotonic()
            refusals = await asyncio.gather(
                backend.kv_put(ns, "k0", b"10"), backend.kv_put(ns, "new", b"1"),
                backend.kv_delete(ns, "k1"), backend.kv_get(ns, "k2"),
                backend.kv_list(ns, every, limit=10, after=None),
                backend.kv_delete_pattern(ns, every), return_exceptions=True,
            )
            assert time.monotonic() - started < 5  # each sent again for about a second
            for refusal in refusals:
                assert isinstance(refusal, BackendUnavailable), refusal
                assert "TryAgainError" in str(refusal) and "moving" in str(refusal), refusal
            assert _dump([src, dst], slot) == before  # nothing was written, anywhere
        # Every key is on the target, but the slot still imports there: the source
        # answers ASK, and the target refuses scripts until the slot is its own ...
        _migrate(src, target, _keys_in_slot(src, slot))
        assert _keys_in_slot(src, slot) == []
        with pytest.raises(BackendUnavailable, match="TryAgainError"):
            await backend.kv_put(ns, "k0", b"10")
        # ... while a single-key command follows ASK (not learnt as the owner).
        assert await backend.store.call(rev, lambda c: c.get(rev), write=False) == b"5"
        assert backend.nodes.node_for(rev) == source.addr
        # A write sent now waits: once the slot is the target's, it runs there.
        refused = _tryagains(dst)
        put = asyncio.create_task(backend.kv_put(ns, "k0", b"10"))
        while _tryagains(dst) == refused:
            assert not put.done(), put
            await asyncio.sleep(0.005)
        for node in itertools.chain([target, source], masters):
            c = node.client()
            try:
                c.execute_command("CLUSTER SETSLOT", slot, "NODE", target.node_id())
            finally:
                c.close()
        done = await put
        assert done.entry.revision == 6 and not done.created
        assert [e.revision for e in (await backend.read_events(ns, 0)).events] == [
            1, 2, 3, 4, 5, 6
        ]
        got = await backend.kv_get(ns, "k1")
        assert got is not None and got.value == b"1"
        assert backend.nodes.node_for(rev) == target.addr  # MOVED: learnt
        assert (await backend.kv_put(ns, "k9", b"9")).entry.revision == 7
    finally:
        src.close()
        dst.close()
        await backend.close()
    redis_cluster.wait_ok()


async def test_lock_wakeups_hear_a_hand_off_published_on_any_master(
    redis_cluster: RedisCluster,
) -> None:
    """Lock hand-offs PUBLISH on the namespace's master; the process's one listener is
    subscribed on one master (the next one after a failure) and hears every master."""
    redis_cluster.wait_ok()
    backend = RedisBackend.from_url(redis_cluster.url)
    await backend.start()
    wakeups = LockWakeups(backend.nodes.listener)
    try:
        assert backend.nodes.listener(0) is not backend.nodes.listener(1)
        wakeups.register("t0")
        await asyncio.wait_for(wakeups.subscribed.wait(), 30)
        for i, master in enumerate(redis_cluster.masters()):
            woken = wakeups.register(f"t{i}")
            c = master.client()
            try:
                c.publish(WAKE_CHANNEL, f"t{i}")
            finally:
                c.close()
            assert await asyncio.wait_for(woken, 10) == WAKE
    finally:
        await wakeups.close()
        await backend.close()


async def test_a_sweep_goes_on_past_a_namespace_whose_slot_is_moving(
    redis_cluster: RedisCluster,
) -> None:
    """A namespace refused while its slot moves stays due; the sweep expires the others."""
    redis_cluster.wait_ok()
    redis_cluster.flush()  # no other test's deadlines in the global index
    moving, other = "sweep-moving", "sweep-other"
    masters = redis_cluster.masters()
    slot = slot_of_namespace(moving)
    source = next(n for n in masters if n.port == redis_cluster.owner_port(slot))
    target = next(n for n in masters if n is not source)
    backend = RedisBackend.from_url(redis_cluster.url)
    await backend.start()
    src = source.client()

    async def stored(ns: str) -> bool:
        key = f"cb:{{{ns}}}:k:k"  # the entry itself: a read would expire it on its own
        return bool(await backend.client_for(key).exists(key))

    try:
        await backend.kv_put(moving, "k", b"1", ttl_ms=1)
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.node_id())
        try:
            await asyncio.sleep(0.01)  # the deadline is past (1 ms); nothing to await on
            # The only due namespace refuses: the pass fails (the sweeper logs it).
            with pytest.raises(BackendUnavailable, match="deferred"):
                await backend.log.expire_due()
            assert await stored(moving)
            await backend.kv_put(other, "k", b"1", ttl_ms=1)
            await asyncio.sleep(0.01)
            expired = await backend.log.expire_due()
        finally:
            src.execute_command("CLUSTER SETSLOT", slot, "STABLE")
        assert expired == 1
        assert not await stored(other) and await stored(moving)
        assert await backend.log.expire_due() == 1  # the deferred one, now its slot is back
        assert not await stored(moving)
    finally:
        await backend.close()


async def test_a_master_without_the_library_gets_it_loaded_by_the_next_call(
    redis_cluster: RedisCluster,
) -> None:
    """A master that lost the library (a new master, one restarted without persistence):
    the next call to a namespace it serves loads the library there, on that master only,
    and runs once; its replica gets the library from it."""
    from app.backends.redis.library import load_library

    redis_cluster.wait_ok()
    ns = "lib-gone"
    owner = redis_cluster.owner_port(slot_of_namespace(ns))
    master = next(n for n in redis_cluster.masters() if n.port == owner)
    others = [n for n in redis_cluster.masters() if n is not master]
    name = load_library().name
    backend = RedisBackend.from_url(redis_cluster.url)
    await backend.start()
    client = master.client()
    try:
        await backend.kv_put(ns, "n", b"0")
        client.function_delete(name)
        assert client.function_list(name) == []
        for i in range(1, 4):
            assert (await backend.kv_increment(ns, "n", 1)).entry.value == str(i).encode()
        assert len(client.function_list(name)) == 1
        for node in others:
            c = node.client()
            try:
                assert len(c.function_list(name)) == 1
            finally:
                c.close()
        assert client.execute_command("WAIT", 1, 5000) >= 1  # the load reached a replica
        replicas = 0
        for node in redis_cluster.alive():
            c = node.client()
            try:
                role = c.info("replication")
                if role.get("role") == "slave" and role.get("master_port") == master.port:
                    replicas += 1
                    assert len(c.function_list(name)) == 1
            finally:
                c.close()
        assert replicas >= 1
    finally:
        client.close()
        await backend.close()
