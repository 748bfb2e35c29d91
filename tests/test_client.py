"""The sync client against a real service on both backends: every method, its typed
results and its typed errors."""

from __future__ import annotations

import hashlib
import io
import threading
import time

import pytest

from corkboard.client import (
    AlreadyExists,
    Artifact,
    ConnectionFailed,
    ConstraintViolation,
    Corkboard,
    Entry,
    Event,
    Fence,
    InvalidKey,
    InvalidTTL,
    LockGrant,
    LockHeld,
    LockQueued,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    Reset,
    RevisionMismatch,
    StaleFence,
    Synced,
    Unprocessable,
)
from tests.support import free_port
from tests.support_client import acb, cb, ns, service  # noqa: F401

# -- keys ---------------------------------------------------------------------------------


def test_put_get_and_conditional_writes(cb: Corkboard) -> None:
    created = cb.put("agents/a1/status", {"state": "idle"})
    assert isinstance(created, Entry)
    assert (created.key, created.value, created.revision, created.version) == (
        "agents/a1/status", {"state": "idle"}, 1, 1)
    assert created.etag == '"1"'
    assert cb.get("agents/a1/status") == created
    assert cb.get_value("agents/a1/status") == {"state": "idle"}
    assert cb.get_value("missing", default=7) == 7

    replaced = cb.put("agents/a1/status", {"state": "busy"}, if_revision=1)
    assert (replaced.revision, replaced.version) == (2, 2)
    with pytest.raises(RevisionMismatch) as mismatch:
        cb.put("agents/a1/status", "late", if_revision=1)
    assert mismatch.value.status == 412 and mismatch.value.code == "revision_mismatch"
    assert mismatch.value.current["revision"] == 2
    with pytest.raises(AlreadyExists) as exists:
        cb.put("agents/a1/status", "again", if_revision=0)
    assert exists.value.status == 412 and exists.value.current["value"] == {"state": "busy"}
    assert cb.put("leader", "a1", if_revision=0).version == 1
    # read an older revision while kept
    assert cb.get("agents/a1/status", revision=1).value == {"state": "idle"}
    with pytest.raises(NotFound) as missing:
        cb.get("nope")
    assert missing.value.status == 404 and "nope" in missing.value.detail
    assert str(missing.value).startswith("not_found: ")


def test_ttl_touch_history_delete(cb: Corkboard) -> None:
    entry = cb.put("tmp", 1, ttl="30s")
    assert entry.expires_at is not None
    touched = cb.touch("tmp", 0)
    assert touched.expires_at is None and touched.revision == entry.revision
    cb.put("tmp", 2)
    cb.put("tmp", 3)
    assert [e.value for e in cb.history("tmp")] == [3, 2, 1]
    with pytest.raises(RevisionMismatch):
        cb.delete("tmp", if_revision=1)
    cb.delete("tmp")
    cb.delete("tmp")  # fine when absent
    with pytest.raises(NotFound):
        cb.get("tmp")
    with pytest.raises(InvalidTTL):
        cb.put("tmp", 1, ttl="soon")


def test_patch_and_increment(cb: Corkboard) -> None:
    cb.put("cfg", {"mode": "a", "retries": 1})
    assert cb.patch("cfg", merge={"retries": 3, "mode": None}).value == {"retries": 3}
    patched = cb.patch("cfg", json_patch=[{"op": "add", "path": "/x", "value": [1]}])
    assert patched.value == {"retries": 3, "x": [1]}
    with pytest.raises(RevisionMismatch):
        cb.patch("cfg", json_patch=[{"op": "test", "path": "/retries", "value": 9}])
    with pytest.raises(NotFound):
        cb.patch("absent", merge={"a": 1})
    assert cb.patch("absent", merge={"a": 1}, initial={}).value == {"a": 1}
    with pytest.raises(ValueError):
        cb.patch("cfg")
    assert cb.increment("n").value == 1
    assert cb.increment("n", 2.5).value == 3.5
    assert cb.increment("m", -1, initial=10).value == 9
    with pytest.raises(Unprocessable):  # 422 on a non-number
        cb.increment("cfg")


def test_listing_pages_and_iterator(cb: Corkboard) -> None:
    for i in range(25):
        cb.put(f"jobs/{i:02d}", i)
    cb.put("other", 0)
    page = cb.list("jobs/*", limit=10)
    assert [e.key for e in page.items] == [f"jobs/{i:02d}" for i in range(10)]
    assert page.next_cursor is not None and page.revision == 26
    keys = [e.key for e in cb.iter_keys("jobs/*", page_size=7)]
    assert keys == [f"jobs/{i:02d}" for i in range(25)]
    bare = cb.list("jobs/0*", values=False)
    assert all(e.value is None for e in bare.items) and bare.next_cursor is None


def test_cas_loop(cb: Corkboard) -> None:
    assert cb.cas_loop("counter", lambda n: n + 1, default=0).value == 1
    assert cb.cas_loop("counter", lambda n: n * 10).value == 10
    with pytest.raises(NotFound):
        cb.cas_loop("missing", lambda n: n)


def test_cas_loop_under_contention_is_exact(cb: Corkboard) -> None:
    """Four threads, eight increments each, through read-modify-write with If-Match."""
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(8):
                cb.cas_loop("shared", lambda n: n + 1, default=0, attempts=200)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = cb.get("shared")
    assert final.value == 32 and final.version == 32


def test_invalid_key_and_namespace_views(cb: Corkboard) -> None:
    with pytest.raises(InvalidKey) as bad:
        cb.put("/leading", 1)
    assert bad.value.status == 400
    other = cb.namespace(cb.ns + "-b")
    other.put("k", "b")
    cb.put("k", "a")
    assert (cb.get_value("k"), other.get_value("k")) == ("a", "b")


# -- feed ---------------------------------------------------------------------------------


def test_events_long_poll_and_watch(cb: Corkboard) -> None:
    cb.put("a", 1)
    cb.put("b", 2)
    cb.delete("a")
    batch = cb.events(0)
    assert [(e.revision, e.type, e.key) for e in batch.events if isinstance(e, Event)] == [
        (1, "kv.put", "a"), (2, "kv.put", "b"), (3, "kv.delete", "a")]
    assert batch.revision == 3
    assert cb.events(3, wait=0.05).events == []
    only = cb.events(0, pattern="b", types=["kv.put"])
    assert [e.key for e in only.events if isinstance(e, Event)] == ["b"]

    with cb.watch(since=1) as stream:
        got = [next(stream), next(stream)]
    assert [(e.revision, e.type) for e in got if isinstance(e, Event)] == [
        (2, "kv.put"), (3, "kv.delete")]
    assert isinstance(got[1], Event) and got[1].old_value == 1 and got[1].value is None

    with cb.watch("b*", snapshot=True) as stream:
        first, synced = next(stream), next(stream)
        assert isinstance(first, Event) and first.snapshot and first.key == "b"
        assert synced == Synced(3)
        cb.put("b2", 5)
        live = next(stream)
        assert isinstance(live, Event) and (live.key, live.revision) == ("b2", 4)


def test_watch_reset_raises_or_yields(cb: Corkboard) -> None:
    cb.put("x", 1)
    from corkboard.client import WatchReset

    with pytest.raises(WatchReset) as reset, cb.watch(since=99) as stream:
        next(stream)
    assert reset.value.current_revision == 1
    with cb.watch(since=99, on_reset="yield") as stream:
        item = next(stream)
        assert isinstance(item, Reset) and item.current_revision == 1
        cb.put("x", 2)
        after = next(stream)
        assert isinstance(after, Event) and after.revision == 2


# -- locks --------------------------------------------------------------------------------


def test_lock_calls(cb: Corkboard) -> None:
    grant = cb.acquire("jobs/nightly", owner="w1", ttl="30s")
    assert isinstance(grant, LockGrant) and grant.token >= 1 and grant.owner == "w1"
    with pytest.raises(LockHeld) as held:
        cb.acquire("jobs/nightly", owner="w2", wait=0.1)
    assert held.value.status == 409 and held.value.holder["owner"] == "w1"
    queued = cb.acquire("jobs/nightly", owner="w2", mode="queue", entry={"n": 1})
    assert queued == LockQueued("queued", 1)
    holder = cb.get_lock("jobs/nightly")
    assert holder is not None and holder.token == grant.token and holder.pending_count == 1
    assert [h.name for h in cb.list_locks("jobs/*").items] == ["jobs/nightly"]
    assert cb.refresh_lock("jobs/nightly", "w1", grant.token, ttl=60).token == grant.token
    cb.put("report", "v1")
    with cb.fenced(grant):
        assert cb.put("report", "fenced").value == "fenced"
    released = cb.release("jobs/nightly", "w1", grant.token)
    assert released.status == "released" and released.pending == [{"n": 1}]
    assert cb.get_lock("jobs/nightly") is None
    with pytest.raises(StaleFence) as stale, cb.fenced(Fence("jobs/nightly", grant.token)):
        cb.put("report", "late")
    assert stale.value.status == 409
    assert cb.get_value("report") == "fenced"
    again = cb.acquire("jobs/nightly", owner="w3")
    assert isinstance(again, LockGrant) and again.token > grant.token
    forced = cb.force_release("jobs/nightly")
    assert forced.status == "released" and forced.owner == "w3"


def test_lock_listing_pages_and_iter_locks_follows_the_cursors(cb: Corkboard) -> None:
    names = [f"jobs/{i:02d}" for i in range(7)]
    for name in reversed(names):
        cb.acquire(name, owner="w")
    cb.acquire("other", owner="w")
    cb.acquire("jobs/s", owner="w", session="chat-9")
    page = cb.list_locks("jobs/*", limit=3)
    assert [h.name for h in page.items] == names[:3] and page.next_cursor is not None
    page = cb.list_locks("jobs/*", limit=3, cursor=page.next_cursor)
    assert [h.name for h in page.items] == names[3:6]
    assert [h.name for h in cb.iter_locks("jobs/*", page_size=2)] == names
    assert [h.name for h in cb.iter_locks(page_size=3)] == [*names, "other"]
    assert [h.name for h in cb.iter_locks(session="chat-9", page_size=1)] == ["jobs/s"]


def test_lock_context_refreshes_in_a_thread_and_fences(cb: Corkboard) -> None:
    with cb.lock("jobs/sync", ttl=0.6) as held:
        deadline = time.monotonic() + 1.5  # well past the ttl: only refreshes keep it
        while time.monotonic() < deadline:
            assert cb.get_lock("jobs/sync") is not None
            time.sleep(0.1)
        assert held.refreshes >= 3 and held.lost is None
        assert cb.put("out", 1).value == 1  # fenced, applied
        other = cb.namespace(cb.ns + "-other")
        assert other.put("out", 2).value == 2  # another namespace: not fenced
    assert cb.get_lock("jobs/sync") is None
    with pytest.raises(StaleFence), cb.fenced(held.fence):
        cb.put("out", 3)


def test_session_locks_fence_session_writes(cb: Corkboard) -> None:
    grant = cb.acquire("reply", owner="bot", session="chat-1")
    assert isinstance(grant, LockGrant) and grant.session == "chat-1"
    assert grant.fence_headers["Fence-Session"] == "chat-1"
    assert [h.name for h in cb.list_locks(session="chat-1").items] == ["reply"]
    assert cb.get_lock("reply") is None  # not a namespace lock
    with cb.lock("reply2", session="chat-1", ttl=10) as held:
        assert cb.put_state("chat-1", "thread", "t1", {"a": 1}) == {"a": 1}
        assert held.fence.session == "chat-1"
    cb.release("reply", "bot", grant.token, session="chat-1")
    snapshot = cb.export_session("chat-1")
    assert snapshot["thread_state"] == {"t1": {"a": 1}}


# -- sessions -----------------------------------------------------------------------------


def test_sessions_and_variables(cb: Corkboard) -> None:
    session = cb.put_session("s1", metadata={"user": "ada"}, ttl="30m")
    assert session.session_id == "s1" and session.metadata == {"user": "ada"}
    assert cb.get_session("s1").ttl == 1800
    var = cb.register_variable("s1", "temperature", "float", 0.7,
                               constraints={"min": 0, "max": 2}, description="sampling")
    assert var.id.startswith("var_") and var.version == 1 and var.description == "sampling"
    cb.register_variable("s1", "mode", "choice", "fast",
                         constraints={"choices": ["fast", "careful"]})
    with pytest.raises(AlreadyExists) as taken:
        cb.register_variable("s1", "mode", "string", "x")
    assert taken.value.status == 409
    with pytest.raises(ConstraintViolation) as broken:
        cb.set_variable("s1", "temperature", 3)
    assert broken.value.status == 422 and broken.value.errors
    assert cb.set_variable("s1", var.id, 1.2, if_version=1).version == 2
    with pytest.raises(RevisionMismatch):
        cb.set_variable("s1", "temperature", 1.0, if_version=1)
    assert cb.get_variable("s1", "temperature").value == 1.2
    assert [v.name for v in cb.list_variables("s1")] == ["mode", "temperature"]
    assert cb.get_values("s1", ["temperature", "nope"]) == {"temperature": 1.2}
    assert cb.get_values("s1") == {"temperature": 1.2, "mode": "fast"}
    batch = cb.set_values("s1", {"temperature": 0.2, "mode": "careful"})
    assert batch.updated == ["temperature", "mode"] and batch.versions["temperature"] == 3
    with pytest.raises(ConstraintViolation):
        cb.set_values("s1", {"temperature": 9, "mode": "fast"})
    partial = cb.set_values("s1", {"temperature": 9, "mode": "fast"}, atomic=False)
    assert partial.updated == ["mode"] and "temperature" in partial.errors
    cb.delete_variable("s1", "mode")
    with pytest.raises(NotFound):
        cb.delete_variable("s1", "mode")
    assert [s.session_id for s in cb.list_sessions().items] == ["s1"]
    assert [s.session_id for s in cb.iter_sessions("s*", page_size=1)] == ["s1"]
    cb.delete_session("s1")
    with pytest.raises(NotFound):
        cb.get_session("s1")


def test_chat_state_and_snapshots(cb: Corkboard) -> None:
    cb.subscribe("s1", "thread-1")
    cb.subscribe("s1", "thread-1")
    assert cb.is_subscribed("s1", "thread-1") and not cb.is_subscribed("s1", "thread-2")
    assert cb.subscriptions("s1") == ["thread-1"]
    assert cb.dedupe("s1", "m1", limit=10) is False
    assert cb.dedupe("s1", "m1") is True
    assert cb.put_state("s1", "thread", "thread-1", {"topic": "billing", "turn": 1}) == {
        "topic": "billing", "turn": 1}
    assert cb.patch_state("s1", "thread", "thread-1", {"turn": 2, "topic": None}) == {
        "turn": 2}
    assert cb.get_state("s1", "thread", "thread-1") == {"turn": 2}
    cb.put_state("s1", "channel", "general", {"muted": False})
    cb.register_variable("s1", "v", "integer", 1)
    snapshot = cb.export_session("s1")
    assert snapshot["subscriptions"] == ["thread-1"] and snapshot["dedupe"] == ["m1"]
    result = cb.import_session("s1-copy", snapshot)
    assert result.session_id == "s1-copy" and result.created
    copy = cb.export_session("s1-copy")
    assert copy["channel_state"] == {"general": {"muted": False}}
    assert copy["variables"] == snapshot["variables"]
    cb.unsubscribe("s1", "thread-1")
    assert cb.subscriptions("s1") == []
    cb.delete_state("s1", "thread", "thread-1")
    with pytest.raises(NotFound):
        cb.get_state("s1", "thread", "thread-1")


# -- artifacts ----------------------------------------------------------------------------


def test_artifacts_streamed_and_ranges(cb: Corkboard) -> None:
    data = bytes(range(256)) * 1024  # 256 KiB of binary
    meta = cb.put_artifact("runs/r1/blob", io.BytesIO(data), content_type="application/x-bin")
    assert isinstance(meta, Artifact)
    assert (meta.size, meta.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert cb.get_artifact("runs/r1/blob") == data
    assert cb.get_artifact("runs/r1/blob", range=(10, 19)) == data[10:20]
    assert cb.get_artifact("runs/r1/blob", range=(-5, None)) == data[-5:]
    out = io.BytesIO()
    info = cb.download_artifact("runs/r1/blob", out, range=(100, None))
    assert out.getvalue() == data[100:] and info.status == 206
    assert info.content_range == f"bytes 100-{len(data) - 1}/{len(data)}"
    with cb.open_artifact("runs/r1/blob") as (head, chunks):
        assert head.sha256 == meta.sha256 and head.content_type == "application/x-bin"
        assert b"".join(chunks) == data
    assert cb.head_artifact("runs/r1/blob").size == len(data)
    with pytest.raises(RangeNotSatisfiable):
        cb.get_artifact("runs/r1/blob", range=(len(data) + 5, None))
    # chunks from a generator, conditional writes on the sha256
    second = cb.put_artifact("runs/r1/blob", (bytes([i]) * 1000 for i in range(5)),
                             if_sha256=meta.sha256)
    assert second.size == 5000
    with pytest.raises(RevisionMismatch):
        cb.put_artifact("runs/r1/blob", b"x", if_sha256=meta.sha256)
    with pytest.raises(AlreadyExists):
        cb.put_artifact("runs/r1/blob", b"x", if_absent=True)
    cb.put_artifact("runs/r2/log", b"hello", ttl="1h", content_type="text/plain")
    assert [a.key for a in cb.list_artifacts("runs/*").items] == ["runs/r1/blob", "runs/r2/log"]
    assert [a.key for a in cb.iter_artifacts(page_size=1)] == ["runs/r1/blob", "runs/r2/log"]
    cb.delete_artifact("runs/r2/log")
    with pytest.raises(NotFound):
        cb.head_artifact("runs/r2/log")
    with pytest.raises(PayloadTooLarge) as big:
        cb.put_artifact("big", b"\0" * (1024 * 1024 + 1))
    assert big.value.status == 413
    with pytest.raises(PayloadTooLarge):
        cb.put("big", "x" * 70_000)


# -- service ------------------------------------------------------------------------------


def test_capabilities_ready_and_unreachable(cb: Corkboard) -> None:
    caps = cb.capabilities()
    assert caps.backend in ("memory", "redis") and "max_value_bytes" in str(caps.limits)
    assert cb.ready()
    with Corkboard(f"http://127.0.0.1:{free_port()}", retries=1) as nowhere:
        with pytest.raises(ConnectionFailed) as failed:
            nowhere.get("k")
        assert failed.value.code == "unreachable"
