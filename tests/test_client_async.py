"""The async client against a real service on both backends: the same calls as the sync
client's tests where they differ in I/O (tasks, streams, the background refresher)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest

from corkboard.client import (
    AsyncCorkboard,
    ConstraintViolation,
    Event,
    LockGrant,
    LockLost,
    NotFound,
    RevisionMismatch,
    StaleFence,
    Synced,
)
from tests.support_client import acb, cb, ns, service  # noqa: F401


async def test_keys_and_errors(acb: AsyncCorkboard) -> None:
    entry = await acb.put("k", {"a": 1}, ttl=30)
    assert entry.revision == 1 and entry.expires_at is not None
    assert (await acb.get("k")).value == {"a": 1}
    with pytest.raises(RevisionMismatch) as exc:
        await acb.put("k", 2, if_revision=7)
    assert exc.value.current["revision"] == 1
    assert (await acb.patch("k", merge={"b": 2})).value == {"a": 1, "b": 2}
    assert (await acb.increment("n", 3)).value == 3
    assert (await acb.touch("n", "1m")).expires_at is not None
    assert [e.revision for e in await acb.history("k")] == [2, 1]
    assert [e.key async for e in acb.iter_keys(page_size=1)] == ["k", "n"]
    assert (await acb.list(values=False)).items[0].value is None
    await acb.delete("k")
    with pytest.raises(NotFound):
        await acb.get("k")
    assert (await acb.capabilities()).version
    assert await acb.ready()


async def test_cas_loop_with_concurrent_tasks_is_exact(acb: AsyncCorkboard) -> None:
    async def work() -> None:
        for _ in range(8):
            await acb.cas_loop("shared", lambda n: n + 1, default=0, attempts=200)

    await asyncio.gather(*(work() for _ in range(4)))
    final = await acb.get("shared")
    assert (final.value, final.version) == (32, 32)


async def test_watch_snapshot_then_live_and_long_poll(acb: AsyncCorkboard) -> None:
    await acb.put("cfg.a", 1)
    await acb.put("other", 1)
    async with acb.watch("cfg.*", snapshot=True, types="kv") as stream:
        first = await anext(stream)
        assert isinstance(first, Event) and first.snapshot and first.key == "cfg.a"
        assert await anext(stream) == Synced(2)
        await acb.put("other", 2)
        await acb.put("cfg.b", 2)
        live = await anext(stream)
        assert isinstance(live, Event) and (live.key, live.revision) == ("cfg.b", 4)
    polled = asyncio.create_task(acb.events(4, wait="10s", pattern="cfg.*"))
    await asyncio.sleep(0)
    await acb.put("cfg.c", 3)
    batch = await asyncio.wait_for(polled, 10)
    assert [e.revision for e in batch.events] == [5] and batch.revision == 5


async def test_lock_refreshes_past_its_ttl_and_fences_writes(acb: AsyncCorkboard) -> None:
    async with acb.lock("jobs/nightly", ttl=1, owner="w1") as held:
        assert isinstance(held.grant, LockGrant)
        await asyncio.sleep(2.2)  # past twice the ttl: only refreshing keeps it
        assert held.refreshes >= 3 and held.lost is None
        holder = await acb.get_lock("jobs/nightly")
        assert holder is not None and holder.token == held.token
        assert [h.name async for h in acb.iter_locks(page_size=1)] == ["jobs/nightly"]
        page = await acb.list_locks("jobs/*", limit=1)
        assert [h.token for h in page.items] == [held.token]
        written = await acb.put("reports/nightly", "done")  # fenced by the lock
        assert written.value == "done"
        token = held.token
    assert await acb.get_lock("jobs/nightly") is None
    with pytest.raises(StaleFence):
        async with acb.lock("jobs/nightly", ttl=5) as again:
            assert again.token > token
            with acb.fenced(held.fence):  # the old token: refused, nothing written
                await acb.put("reports/nightly", "stale")
    assert (await acb.get("reports/nightly")).value == "done"


async def test_lost_lock_is_detected_and_reported(acb: AsyncCorkboard) -> None:
    with pytest.raises(LockLost):
        async with acb.lock("L", ttl=0.6) as held:
            await acb.force_release("L")
            for _ in range(100):
                if held.lost is not None:
                    break
                await asyncio.sleep(0.05)
            assert held.lost is not None
            with pytest.raises(StaleFence):
                await acb.put("guarded", 1)
            with pytest.raises(LockLost):
                held.check()
    with pytest.raises(NotFound):
        await acb.get("guarded")


async def test_sessions_variables_and_snapshot(acb: AsyncCorkboard) -> None:
    await acb.put_session("s1", metadata={"u": 1})
    await acb.register_variable("s1", "t", "integer", 1, constraints={"max": 5})
    with pytest.raises(ConstraintViolation):
        await acb.set_variable("s1", "t", 9)
    assert (await acb.set_values("s1", {"t": 2})).updated == ["t"]
    assert await acb.get_values("s1", ["t"]) == {"t": 2}
    await acb.subscribe("s1", "th")
    assert await acb.dedupe("s1", "m") is False
    await acb.put_state("s1", "channel", "c", {"x": 1})
    assert await acb.patch_state("s1", "channel", "c", {"y": 2}) == {"x": 1, "y": 2}
    snapshot = await acb.export_session("s1")
    assert (await acb.import_session("s2", snapshot)).created
    assert [s.session_id async for s in acb.iter_sessions()] == ["s1", "s2"]
    assert (await acb.get_variable("s2", "t")).value == 2


async def test_artifact_async_upload_and_streamed_download(acb: AsyncCorkboard) -> None:
    chunks = [bytes([i]) * 70_000 for i in range(4)]

    async def body() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    data = b"".join(chunks)
    meta = await acb.put_artifact("a/b.bin", body())
    assert meta.sha256 == hashlib.sha256(data).hexdigest()
    async with acb.open_artifact("a/b.bin", range=(69_990, 70_009)) as (info, stream):
        assert info.status == 206
        assert b"".join([c async for c in stream]) == data[69_990:70_010]
    assert await acb.get_artifact("a/b.bin") == data
    assert [a.key async for a in acb.iter_artifacts()] == ["a/b.bin"]
    await acb.delete_artifact("a/b.bin", if_sha256=meta.sha256)
    with pytest.raises(NotFound):
        await acb.get_artifact("a/b.bin")
