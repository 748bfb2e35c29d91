"""Routing on a Redis Cluster, step by step: a namespace's slot is moved by hand
(IMPORTING/MIGRATING, one MIGRATE, SETSLOT NODE) between calls, and the backend follows
ASK (without learning it as the slot's owner) and then MOVED (learning it).
"""

from __future__ import annotations

import asyncio
import itertools

import redis

from app.backends.redis import RedisBackend
from app.backends.redis.wakeups import WAKE, WAKE_CHANNEL, LockWakeups
from tests.redis_cluster import RedisCluster, slot_of_namespace


def _keys_in_slot(node: redis.Redis, slot: int) -> list[bytes]:
    keys: list[bytes] = node.execute_command("CLUSTER GETKEYSINSLOT", slot, 100_000)
    return keys


async def test_ask_then_moved_while_a_slot_moves(redis_cluster: RedisCluster) -> None:
    redis_cluster.wait_ok()
    source_port = redis_cluster.owner_port(slot_of_namespace("mv-route"))
    ns = "mv-route"
    slot = slot_of_namespace(ns)
    masters = redis_cluster.masters()
    source = next(n for n in masters if n.port == source_port)
    target = next(n for n in masters if n.port != source_port)
    backend = RedisBackend.from_url(redis_cluster.url)
    await backend.start()
    src, dst = source.client(), target.client()
    try:
        for i in range(5):
            await backend.kv_put(ns, f"k{i}", b"%d" % i)
        # Move every key of the slot in one MIGRATE; the slot is still the source's.
        dst.execute_command("CLUSTER SETSLOT", slot, "IMPORTING", source.node_id())
        src.execute_command("CLUSTER SETSLOT", slot, "MIGRATING", target.node_id())
        keys = _keys_in_slot(src, slot)
        assert keys
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        assert _keys_in_slot(src, slot) == []
        # The source answers ASK; the write goes to the target, asked with ASKING.
        put = await backend.kv_put(ns, "k0", b"10")
        assert put.entry.revision == 6 and not put.created
        asking = dst.pipeline(transaction=False)
        asking.execute_command("ASKING")
        asking.hget(f"cb:{{{ns}}}:k:k0", "v")
        assert asking.execute()[1] == b"10"
        assert backend.nodes.node_for(f"cb:{{{ns}}}:rev") == source.addr  # ASK: not learnt
        assert [e.revision for e in (await backend.read_events(ns, 0)).events] == [
            1, 2, 3, 4, 5, 6
        ]
        # The slot is the target's now: the source answers MOVED, and the map learns it.
        for node in itertools.chain([target, source], (n for n in masters)):
            c = node.client()
            try:
                c.execute_command("CLUSTER SETSLOT", slot, "NODE", target.node_id())
            finally:
                c.close()
        got = await backend.kv_get(ns, "k1")
        assert got is not None and got.value == b"1"
        assert backend.nodes.node_for(f"cb:{{{ns}}}:rev") == target.addr
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
