"""What a key's GET and PUT cost on NATS, counted as the messages the backend's
connection sends (each JetStream request is one): a read of a key is its direct get and
its expiry override's, in parallel, whether or not the namespace exists (a missing one
is one stream info, not a direct get and two); and when a session import reads the
namespace's every lock record for the lock quota."""

from __future__ import annotations

from typing import Any

import pytest

from app.backends.nats import NatsBackend
from app.backends.nats import sessions as nats_sessions
from app.backends.nats.lockwait import held_locks
from app.domain.locks import LockRequest


def sent(nats_engine: NatsBackend) -> int:
    return int(nats_engine.store.nc.stats["out_msgs"])


async def test_a_get_is_two_requests_whether_or_not_the_namespace_exists(
    nats_engine: NatsBackend,
) -> None:
    for _ in range(2):  # not cached: the namespace may be made by another process
        before = sent(nats_engine)
        assert await nats_engine.kv_get("nowhere", "k") is None
        assert sent(nats_engine) - before == 2
        assert "nowhere" not in nats_engine.store.buckets
    await nats_engine.kv_put("here", "k", b"1")
    before = sent(nats_engine)
    entry = await nats_engine.kv_get("here", "k")
    assert entry is not None and entry.value == b"1"
    assert sent(nats_engine) - before == 2
    before = sent(nats_engine)
    assert await nats_engine.kv_get("here", "other") is None
    assert sent(nats_engine) - before == 2


async def test_a_get_at_a_revision_reads_the_history_and_the_override_only(
    nats_engine: NatsBackend,
) -> None:
    first = (await nats_engine.kv_put("here", "k", b"1")).entry.revision
    await nats_engine.kv_put("here", "k", b"2")
    before = sent(nats_engine)
    entry = await nats_engine.kv_get("here", "k", revision=first)
    assert entry is not None and entry.value == b"1" and entry.revision == first
    assert sent(nats_engine) - before == 2  # one batched direct get, one override read
    await nats_engine.kv_delete("here", "k")
    assert await nats_engine.kv_get("here", "k", revision=first) is None
    assert await nats_engine.kv_get("nowhere", "k", revision=1) is None


async def test_an_import_counts_the_namespaces_locks_only_when_it_adds_holders(
    nats_engine: NatsBackend, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The lock quota of an import reads every lock and session record of the namespace
    (lockwait.held_locks): only for an import that would hold more locks than its
    session does, never for one that holds none."""
    counts: list[str] = []

    async def counted(store: Any, ns: str) -> int:
        counts.append(ns)
        return await held_locks(store, ns)

    monkeypatch.setattr(nats_sessions, "held_locks", counted)
    ns = "imports"
    await nats_engine.session_put(ns, "s", b"{}", 0)
    lockless = await nats_engine.session_snapshot(ns, "s")
    assert lockless is not None and not lockless.locks
    await nats_engine.lock_acquire(ns, "s", "mine", LockRequest("o", 60_000), session=True)
    holding = await nats_engine.session_snapshot(ns, "s")
    assert holding is not None and holding.locks
    await nats_engine.session_import(ns, "s", holding)  # holds what the session holds
    await nats_engine.session_import(ns, "t", lockless)
    assert counts == []
    await nats_engine.session_import(ns, "u", holding)  # a new holder: counted
    assert counts == [ns]
