"""``CORKBOARD_EVENT_RETENTION_BYTES`` on NATS (app/backends/nats/retention.py): the
ledger's byte cut keeps the log's newest messages within the bound (each message read
once), resumes behind it get ``reset``, compaction purges below it, and the newest
event always stays."""

from __future__ import annotations

import asyncio

import pytest

from app.backends.base import Backend
from app.backends.nats import retention
from app.backends.nats.retention import Ledger, size_of
from app.backends.nats.store import NatsStore
from app.settings import Settings
from tests.helpers import events
from tests.nats_server import flush_nats
from tests.test_quotas import service


async def settled(backend: Backend) -> None:
    """Wait for the background passes of the process (trim.py) to end."""
    tasks = backend.trimmer.tasks  # type: ignore[attr-defined]
    while tasks:
        await asyncio.gather(*tasks.values(), return_exceptions=True)


async def held_bytes(backend: Backend, after: int, ns: str = "default") -> tuple[int, int]:
    """(the stored size of the messages above ``after``, how many)."""
    store = backend.store  # type: ignore[attr-defined]
    msgs, _ = await store.batch(ns, {"seq": after + 1, "batch": 10_000})
    return sum(size_of(m) for m in msgs), len(msgs)


async def test_the_log_keeps_its_newest_events_within_the_byte_bound(nats_url: str) -> None:
    flush_nats(nats_url)
    limit = 65_536

    def make(**overrides: object) -> Settings:
        return Settings(backend=nats_url, sweep_interval_seconds=0.05,
                        **overrides)  # type: ignore[arg-type]

    async with service(make, event_retention_bytes=limit) as (c, b):
        for i in range(100):  # within the bound: nothing compacted
            assert (await c.put(f"/v1/kv/k{i % 5}", json="y" * 500)).status_code in (200, 201)
        await settled(b)
        assert await b.ledger.advance("default") == 0  # type: ignore[attr-defined]
        assert (await events(c, 0))[0]["revision"] == 1
        for i in range(100, 300):
            assert (await c.put(f"/v1/kv/k{i % 5}", json="y" * 500)).status_code in (200, 201)
        await settled(b)
        ledger: Ledger = b.ledger  # type: ignore[attr-defined]
        cut = await ledger.advance("default")  # what the writes since the last pass add
        held, count = await held_bytes(b, cut)
        assert held <= limit and 50 < count < 300, (held, count)
        assert held + size_of((await b.store.batch("default", {  # type: ignore[attr-defined]
            "seq": cut, "batch": 1}))[0][0]) > limit  # the cut is the lowest that fits
        first = (await events(c, 0))[0]
        assert first["type"] == "reset" and first["compacted_revision"] == cut
        assert first["current_revision"] == 300
        resumed = await events(c, cut)
        assert [e["revision"] for e in resumed] == list(range(cut + 1, 301))
        # Compaction purged below the cut what no key needs (5 keys: their history).
        await b.trimmer.trim("default")  # type: ignore[attr-defined]
        info = await b.store.js.stream_info("KV_default")  # type: ignore[attr-defined]
        assert info.state.messages < count + 5 * 10 + 5, info.state


async def test_the_newest_event_stays_whatever_its_size(nats_url: str) -> None:
    flush_nats(nats_url)

    def make(**overrides: object) -> Settings:
        return Settings(backend=nats_url, **overrides)  # type: ignore[arg-type]

    async with service(make, event_retention_bytes=65_536) as (c, b):
        for _ in range(10):
            await c.put("/v1/kv/big", json="z" * 70_000)  # each event beyond the bound
        await settled(b)
        assert await b.ledger.advance("default") == 9  # type: ignore[attr-defined]
        found = await events(c, 9)
        assert [e["revision"] for e in found] == [10]


async def test_a_pass_past_a_purged_message_counts_every_message_once(
    nats_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass reads at most ``SCAN_BUDGET`` sequences; where a message is purged the
    batched read goes on beyond them. What lies beyond is counted by the next pass,
    not skipped: the ledger's total is every message's size, once."""
    flush_nats(nats_url)
    monkeypatch.setattr(retention, "SCAN_BUDGET", 3)
    store = NatsStore([nats_url], timeout=2.0, key_history=10, retention=1000, replicas=1,
                      url=nats_url)
    await store.start()
    try:
        for i, subject in enumerate("abababa"):  # sequences 1..7
            assert await store.publish("ns1", f"$KV.ns1.{subject}", b"x" * (i + 1), {},
                                       None) == i + 1
        await store.js.purge_stream("KV_ns1", subject="$KV.ns1.b", keep=1)  # 2, 4 gone
        ledger = Ledger(store, limit=1 << 30)
        for _ in range(3):  # 1-3, 4-6 (past the gap at 4: the batch reads 5, 6, 7), 7
            await ledger.advance("ns1")
        _, state = await ledger.read("ns1")
        msgs, _ = await store.batch("ns1", {"seq": 1, "batch": 100})
        assert [m.seq for m in msgs] == [1, 3, 5, 6, 7]
        assert (state.upto, state.total) == (7, sum(size_of(m) for m in msgs))
    finally:
        await store.close()
