"""Regression tests for the memory/Redis differences of issue 12, each through HTTP on
both backends: the same request gets the same answer (status, code, body) everywhere."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.helpers import events, problem

S = "/v1/sessions/s1"


# -- fencing ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"If-Match": '"99"'}])
async def test_a_patch_with_a_stale_fence_is_409_before_anything_else(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    fence = {"Fence-Lock": "l", "Fence-Token": "7"}
    merge = {"Content-Type": "application/merge-patch+json"}
    # absent key, no initial: memory and Redis both answer for the fence first
    r = await client.patch("/v1/kv/k", content=b'{"a":1}', headers={**merge, **fence, **headers})
    problem(r, 409, "stale_fence")
    await client.put("/v1/kv/k", json={"a": 0})
    r = await client.patch("/v1/kv/k", content=b'{"a":1}', headers={**merge, **fence, **headers})
    problem(r, 409, "stale_fence")
    patch = {"Content-Type": "application/json-patch+json"}
    r = await client.patch("/v1/kv/k", content=b'[{"op":"test","path":"/a","value":5}]',
                           headers={**patch, **fence})
    problem(r, 409, "stale_fence")
    assert (await client.get("/v1/kv/k")).json()["value"] == {"a": 0}


# -- snapshot import -------------------------------------------------------------------


async def test_an_imported_lock_that_expired_in_1970_is_free(
    client: httpx.AsyncClient,
) -> None:
    doc = {"locks": {"l": {"owner": "o", "token": 3, "expires_at": "1970-01-01T00:00:00Z"}}}
    r = await client.put(f"{S}/snapshot", json=doc)
    assert r.status_code == 201 and r.json()["tokens"] == {}
    problem(await client.get(f"{S}/locks/l"), 404, "not_found")
    r = await client.post(f"{S}/locks/l", json={"owner": "p"})
    assert r.status_code == 200 and r.json()["token"] == 4


async def test_timestamps_before_1970_are_refused(client: httpx.AsyncClient) -> None:
    doc = {"locks": {"l": {"owner": "o", "token": 3, "expires_at": "1969-12-31T23:59:59Z"}}}
    body = problem(await client.put(f"{S}/snapshot", json=doc), 422, "validation_failed")
    assert body["errors"][0]["location"] == ["body", "locks", "l", "expires_at"]
    problem(await client.get(S), 404, "not_found")


@pytest.mark.parametrize("big", [2**52, 2**53, 2**53 + 1, 2**63, 2**64 + 1])
async def test_tokens_and_versions_that_could_not_stay_exact_are_refused(
    client: httpx.AsyncClient, big: int
) -> None:
    raw = b'{"locks": {"l": {"owner": "o", "token": %d}}}' % big
    r = await client.put(f"{S}/snapshot", content=raw,
                         headers={"Content-Type": "application/json"})
    body = problem(r, 422, "validation_failed")
    assert body["errors"][0]["location"] == ["body", "locks", "l", "token"]
    raw = (b'{"variables": {"var_a": {"name": "a", "type": "integer", "value": 1, '
           b'"version": %d}}}' % big)
    r = await client.put(f"{S}/snapshot", content=raw,
                         headers={"Content-Type": "application/json"})
    body = problem(r, 422, "validation_failed")
    assert body["errors"][0]["location"] == ["body", "variables", "var_a", "version"]
    problem(await client.get(S), 404, "not_found")


async def test_the_largest_importable_token_and_version_stay_exact(
    client: httpx.AsyncClient,
) -> None:
    top = 2**52 - 1
    doc = {"locks": {"l": {"owner": "o", "token": top, "ttl": 30}},
           "variables": {"var_a": {"name": "a", "type": "integer", "value": 1,
                                   "version": top}}}
    r = await client.put(f"{S}/snapshot", json=doc)
    assert r.json()["tokens"] == {"l": top}
    r = await client.put(f"{S}/variables/a", json={"value": 2})
    assert r.json()["version"] == top + 1
    r = await client.post(f"{S}/locks/l/release", json={"owner": "o", "token": top})
    assert r.status_code == 200
    tokens = []
    for owner in ("p", "q"):
        r = await client.post(f"{S}/locks/l", json={"owner": owner})
        tokens.append(r.json()["token"])
        await client.post(f"{S}/locks/l/release", json={"owner": owner, "token": tokens[-1]})
    assert tokens == [top + 1, top + 2]
    found = await events(client, session="s1", types="lock.acquired")
    assert [e["token"] for e in found] == tokens


# -- increment -------------------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"by": 2**64}, {"by": -(2**64)}, {"by": 2**53}, {"by": 1, "initial": 2**64},
    {"by": 2**70, "initial": 2**70}, {"by": 10**400},
])
async def test_an_increment_beyond_exact_integers_is_422_everywhere(
    client: httpx.AsyncClient, body: dict[str, int]
) -> None:
    raw = b'{"by": %d' % body["by"] + (b', "initial": %d}' % body["initial"]
                                        if "initial" in body else b"}")
    r = await client.post("/v1/kv/n/increment", content=raw,
                          headers={"Content-Type": "application/json"})
    assert r.status_code in (400, 422), r.text
    assert r.status_code == 422 or r.json()["code"] == "invalid_request"
    problem(await client.get("/v1/kv/n"), 404, "not_found")
    if "initial" in body and body["by"] == 1:
        return  # the initial value is used only when the key is missing
    await client.put("/v1/kv/n", json=5)
    r2 = await client.post("/v1/kv/n/increment", content=raw,
                           headers={"Content-Type": "application/json"})
    assert (r2.status_code, r2.json()["code"]) == (r.status_code, r.json()["code"])
    assert r2.json()["detail"] == r.json()["detail"]


async def test_a_double_beside_a_huge_integer_is_a_double(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/kv/n/increment", content=b'{"by": 18446744073709551616,'
                          b' "initial": 0.5}', headers={"Content-Type": "application/json"})
    text = orjson.dumps(float(2**64) + 0.5)
    assert r.status_code == 201 and r.content.count(b'"value":' + text + b",") == 1


@pytest.mark.parametrize(("start", "by"), [
    (0.1, 0.2), (1e15, 1), (1e16, 1.0), (1e20, 1), (0, 1e-7), (5, 0.0), (-0.5, 0.5),
    (1.5e300, 1.5e300), (123456789, 0.125), (2**60, 0.5), (1e-320, 0), (0.1, -1e22),
])
async def test_the_text_of_a_double_after_increment_is_orjsons(
    client: httpx.AsyncClient, start: float, by: float
) -> None:
    text = orjson.dumps(float(start) + float(by))
    await client.put("/v1/kv/f", json=start)
    r = await client.post("/v1/kv/f/increment", json={"by": by})
    assert r.status_code == 200
    assert orjson.dumps(orjson.loads(r.content)["value"]) == text
    assert b'"value":' + text + b"," in r.content
    stored = (await client.get("/v1/kv/f")).content
    assert b'"value":' + text + b"," in stored
    found = await events(client, types="kv.put", pattern="f")
    assert found[-1]["value"] == orjson.loads(text)


async def test_an_increment_of_a_non_number_says_what_it_holds(
    client: httpx.AsyncClient,
) -> None:
    for value, kind in [("s", "a string"), (None, "null"), (True, "a boolean"),
                        ([1], "an array"), ({"a": 1}, "an object")]:
        await client.put("/v1/kv/x", content=orjson.dumps(value),
                         headers={"Content-Type": "application/json"})
        for by in (1, 0.5):
            r = await client.post("/v1/kv/x/increment", json={"by": by})
            body = problem(r, 422, r.json().get("code", ""))
            assert body["detail"] == (
                f"Key 'x' holds {kind}, not a number; it cannot be incremented."
            )


# -- event JSON written by Lua ---------------------------------------------------------


async def test_strings_in_events_are_written_as_orjson_writes_them(
    client: httpx.AsyncClient,
) -> None:
    owner = "team/a\u2028é"
    r = await client.post("/v1/locks/l", json={"owner": owner})
    token = r.json()["token"]
    await client.post("/v1/locks/l", json={"owner": "x/y", "mode": "queue", "entry": 1})
    await client.post("/v1/locks/l/release", json={"owner": owner, "token": token})
    key = "m/1\\/\x01\t\"é"
    assert (await client.post(f"{S}/dedupe", json={"key": key, "limit": 1})).status_code == 200
    await client.post(f"{S}/dedupe", json={"key": "next", "limit": 1})  # evicts ``key``
    raw = (await client.get("/v1/events", params={"since": 0})).content
    assert orjson.dumps(orjson.loads(raw)) == raw  # byte for byte as orjson writes it
    assert orjson.dumps(owner) in raw and orjson.dumps(key) in raw
    found = orjson.loads(raw)["events"]
    assert [e["owner"] for e in found if e["type"].startswith("lock.")] == [
        owner, "x/y", owner]
    assert [e.get("dedupe_key") for e in found if e["type"] == "session.updated"] == [
        key, "next"]
    assert found[-1]["evicted"] == [key]


async def test_a_tab_or_quote_in_an_artifact_content_type_keeps_its_events_valid(
    client: httpx.AsyncClient,
) -> None:
    content_type = 'text/plain;\tname="a b"; x=\'/\''
    r = await client.put("/v1/artifacts/a", content=b"hi",
                         headers={"Content-Type": content_type})
    assert r.status_code == 201, r.text
    assert r.json()["content_type"] == content_type
    assert (await client.delete("/v1/artifacts/a")).status_code == 204
    raw = (await client.get("/v1/events", params={"since": 0})).content
    found = orjson.loads(raw)["events"]  # valid JSON, on Redis too
    assert [e["type"] for e in found] == ["artifact.put", "artifact.delete"]
    assert found[0]["value"]["content_type"] == content_type
    assert found[1]["old_value"]["content_type"] == content_type
    assert orjson.dumps(orjson.loads(raw)) == raw  # byte for byte as orjson writes it


async def test_values_with_slashes_and_floats_read_alike_in_every_event(
    client: httpx.AsyncClient,
) -> None:
    """Events are encoded once, in Python, from the fields a script stored: no '\\/'
    (Lua's cjson wrote one in a lease event's lock owner), and a float's text is
    orjson's on every backend."""
    value = {"path": "a/b/c", "f": 0.1, "big": 1.5e300, "tiny": 1e-7, "n": -0.0}
    text = orjson.dumps(value)
    await client.put("/v1/kv/dir/a", content=text, headers={"Content-Type": "application/json"})
    await client.post("/v1/leases", json={"ttl": "30s", "id": "l1"})
    r = await client.post("/v1/txn", json={"success": [
        {"op": "put", "key": "dir/b", "value": value, "lease": "l1"},
        {"op": "delete", "key": "dir/a"},
    ]})
    assert r.status_code == 200, r.text
    r = await client.post("/v1/locks/job", json={"owner": "team/a", "lease": "l1"})
    assert r.status_code in (200, 201), r.text
    assert (await client.delete("/v1/leases/l1")).status_code in (200, 204)
    raw = (await client.get("/v1/events", params={"since": 0})).content
    assert b"\\/" not in raw
    assert orjson.dumps(orjson.loads(raw)) == raw  # byte for byte as orjson writes it
    found = orjson.loads(raw)["events"]
    assert [e["type"] for e in found] == [
        "kv.put", "lease.granted", "txn", "lock.acquired", "lease.revoked"]
    assert found[-1]["changes"][-1]["owner"] == "team/a"
    assert raw.count(text) == 4  # put; the txn's put and delete; the revoke's delete
    assert found[2]["changes"][0]["value"] == value


# -- listings past the scan budget -----------------------------------------------------


async def _all_pages(client: httpx.AsyncClient, url: str, pattern: str,
                     field: str) -> tuple[list[str], int]:
    names: list[str] = []
    cursor: str | None = None
    calls = 0
    while True:
        params = {"pattern": pattern, "limit": "2", **({"cursor": cursor} if cursor else {})}
        r = await client.get(url, params=params)
        assert r.status_code == 200, r.text
        calls += 1
        names += [item[field] for item in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return names, calls


async def test_a_sparse_pattern_pages_on_past_the_scan_budget(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.backends import paging

    monkeypatch.setattr(paging, "LIST_SCAN_BUDGET", 5)
    for i in range(23):
        await client.put(f"/v1/kv/n{i:02d}", json=i)
        await client.put(f"/v1/sessions/n{i:02d}", json={})
        await client.put(f"/v1/artifacts/n{i:02d}", content=b"x")
    for name in ("z1x", "z2x", "z3x"):
        await client.put(f"/v1/kv/{name}", json=0)
        await client.put(f"/v1/sessions/{name}", json={})
        await client.put(f"/v1/artifacts/{name}", content=b"x")
    for url, field in (("/v1/kv", "key"), ("/v1/sessions", "session_id"),
                       ("/v1/artifacts", "key")):
        names, calls = await _all_pages(client, url, "*x", field)
        assert names == ["z1x", "z2x", "z3x"], url
        assert calls == 6  # 5 names examined per call, then the last page
        names, _ = await _all_pages(client, url, "n*", field)
        assert len(names) == 23
        r = await client.get(url, params={"pattern": "n05"})  # an exact pattern: one call
        assert [i[field] for i in r.json()["items"]] == ["n05"]
        assert r.json()["next_cursor"] is None


async def test_a_watch_snapshot_finds_keys_past_the_scan_budget(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.backends import backend_from_url, paging
    from app.events import EventFilter, Hub
    from app.settings import Settings

    monkeypatch.setattr(paging, "LIST_SCAN_BUDGET", 5)
    settings = Settings(backend=backend)
    store = backend_from_url(backend, settings)
    await store.start()
    try:
        for i in range(12):
            await store.kv_put("default", f"n{i:02d}", b"1")
        await store.kv_put("default", "zx", b"2")
        hub = Hub(store, snapshot_page=2)
        frames, revision = await hub.snapshot("default", EventFilter.parse("*x", None, None))
        assert revision == 13
        assert [orjson.loads(f.data)["key"] for f in frames] == ["zx"]
    finally:
        await store.close()


# -- the Redis script runner -----------------------------------------------------------

SLOW_SCRIPT = """
local t = redis.call('TIME')
local start = tonumber(t[1]) * 1000000 + tonumber(t[2])
while true do
  t = redis.call('TIME')
  if tonumber(t[1]) * 1000000 + tonumber(t[2]) - start > tonumber(ARGV[1]) then break end
end
return 'slow'
"""


async def test_a_slow_script_in_a_pipeline_does_not_fail_the_others(redis_url: str) -> None:
    """Calls pipelined with a script slower than the call timeout get their own answers
    (Redis ran them all; it was 503 for every call of the batch); heavy scripts (the
    listings, snapshots, sweeps) are never pipelined with others."""
    import asyncio

    from app.backends.redis import RedisBackend
    from app.syntax import Pattern
    from tests.conftest import flush

    flush(redis_url)
    backend = RedisBackend.from_url(redis_url, timeout=0.5)
    await backend.start()
    try:
        slow = backend.client.register_script(SLOW_SCRIPT)
        await backend.client.script_load(SLOW_SCRIPT)
        batches: list[int] = []
        send = backend.store.batcher._send

        async def spy(batch: list[Any]) -> None:
            batches.append(len(batch))
            await send(batch)

        backend.store.batcher._send = spy  # type: ignore[method-assign]

        from app.backends.redis.nodes import Command

        async def slow_call() -> Any:
            async with backend.mapped_errors():
                return await backend.store.batcher.submit(Command(
                    "x", lambda c: c.evalsha(slow.sha, 1, "x", "700000"), script=SLOW_SCRIPT,
                ))

        # one loop turn: two writes, the slow script, two more writes -> one pipeline
        calls = [backend.kv_put("default", "a", b"1"), backend.kv_put("default", "b", b"2"),
                 slow_call(),
                 backend.kv_put("default", "c", b"3"), backend.kv_increment("default", "n", 5)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        # The writes and the slow script were pipelined (an increment may go alone), the slow
        # script in a pipeline with writes.
        assert sum(batches) >= 4 and batches[0] >= 3
        # The slow script itself may time out (503); the calls beside it must not.
        assert results[2] == b"slow" or type(results[2]).__name__ == "BackendUnavailable"
        written = results[:2] + results[3:]
        assert [r.entry.revision for r in written] == [1, 2, 3, 4]  # type: ignore[union-attr]
        for key, value in (("a", b"1"), ("b", b"2"), ("c", b"3"), ("n", b"5")):
            entry = await backend.kv_get("default", key)
            assert entry is not None and entry.value == value
        batches.clear()
        listed = await asyncio.gather(
            backend.kv_list("default", Pattern.compile("*"), limit=10, after=None),
            backend.kv_put("default", "d", b"4"), backend.kv_put("default", "e", b"5"),
            backend.session_snapshot("default", "s1"),
        )
        assert batches == [2]  # only the two writes were pipelined
        keys = {e.key for e in listed[0].items}  # type: ignore[union-attr]
        assert {"a", "b", "c", "n"} <= keys <= {"a", "b", "c", "d", "e", "n"}
    finally:
        await backend.close()


# -- sessions and their locks ----------------------------------------------------------


async def _waiting(client: httpx.AsyncClient, sid: str, name: str) -> None:
    """Until the session lock has an exclusive waiter in line (its lock.queued event)."""
    import asyncio

    for _ in range(200):
        found = await events(client, session=sid, types="lock.queued")
        if any(e.get("mode") == "exclusive" for e in found):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no waiter")


@pytest.mark.parametrize("how", ["delete", "expiry"])
async def test_a_removed_session_hands_its_locks_to_their_waiters(
    client: httpx.AsyncClient, how: str
) -> None:
    import asyncio

    if how == "expiry":
        assert (await client.put(S, json={"ttl": "1s"})).status_code == 201
    r = await client.post(f"{S}/locks/l", json={"owner": "a", "ttl": 60})
    assert r.json()["token"] == 1
    await client.post(f"{S}/locks/l", json={"owner": "b", "mode": "queue", "entry": {"n": 1}})
    await client.post(f"{S}/locks/l", json={"owner": "b", "mode": "queue", "entry": {"n": 2}})
    waiter = asyncio.ensure_future(
        client.post(f"{S}/locks/l", json={"owner": "c", "ttl": 60, "wait": "10s"}))
    await _waiting(client, "s1", "l")
    if how == "delete":
        assert (await client.delete(S)).status_code == 204
    r = await waiter
    assert r.status_code == 200, r.text
    assert r.json()["owner"] == "c" and r.json()["token"] == 2
    assert r.json()["pending"] == [{"n": 1}, {"n": 2}]  # nothing queued is lost
    types = [(e["type"], e.get("owner")) for e in await events(client, session="s1")]
    assert types[-4:] == [("lock.queued", "c"), ("session.deleted", None),
                          ("lock.acquired", "c"), ("lock.refreshed", "c")]
    held = (await client.get(f"{S}/locks/l")).json()
    assert (held["owner"], held["token"], held["pending_count"]) == ("c", 2, 0)


async def test_a_session_lock_call_that_changed_nothing_creates_no_session(
    client: httpx.AsyncClient,
) -> None:
    r = await client.post(f"{S}/locks/l/force-release")
    assert r.status_code == 200 and r.json()["status"] == "free"
    problem(await client.get(S), 404, "not_found")
    assert (await client.get("/v1/sessions")).json()["items"] == []
    assert await events(client) == []
    # one that changed something does
    await client.post(f"{S}/locks/l", json={"owner": "a"})
    assert (await client.post(f"{S}/locks/l/force-release")).json()["status"] == "released"
    assert (await client.get(S)).status_code == 200


# -- found by the differential test ----------------------------------------------------


async def test_a_failed_precondition_reads_alike(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/kv/k", json=1, headers={"If-Match": '"3"'})
    assert problem(r, 412, "revision_mismatch")["detail"] == "The key does not exist (If-Match)."
    await client.put("/v1/kv/k", json=1)
    for method in ("PUT", "DELETE"):
        r = await client.request(method, "/v1/kv/k", content=b"2", headers={
            "If-Match": '"3"', "Content-Type": "application/json"})
        body = problem(r, 412, "revision_mismatch")
        assert body["detail"] == "The key is at revision 1, not 3."
        assert body["current"]["revision"] == 1
    r = await client.put("/v1/kv/k", json=1, headers={"If-None-Match": "*"})
    body = problem(r, 412, "already_exists")
    assert body["detail"] == "The key already exists (If-None-Match: *)."


async def test_a_txn_with_a_stale_fence_is_409_before_an_op_fails(
    client: httpx.AsyncClient,
) -> None:
    """Redis plans a transaction's ops in Python before its script checks the Fence-*
    headers: an op refused in planning (a patch of a missing key without 'initial': 404,
    a failed JSON Patch test: 412 or 422) asks the fence first, as memory's one step."""
    fence = {"Fence-Lock": "l2", "Fence-Token": "3"}
    body = {"success": [{"op": "patch", "key": "k", "merge": {"x": 1}}]}
    problem(await client.post("/v1/txn", json=body, headers=fence), 409, "stale_fence")
    body = {"success": [{"op": "patch", "key": "k", "json_patch": [
        {"op": "test", "path": "/x", "value": 5}]}]}
    await client.put("/v1/kv/k", json={"x": 0})
    problem(await client.post("/v1/txn", json=body, headers=fence), 409, "stale_fence")
    body = {"success": [{"op": "patch", "key": "k", "json_patch": [
        {"op": "test", "path": "/y/0", "value": 5}]}]}
    problem(await client.post("/v1/txn", json=body, headers=fence), 409, "stale_fence")
    assert (await client.get("/v1/kv/k")).json()["value"] == {"x": 0}


# -- memory: session listing and deletion are not O(sessions) -------------------------


class _CountingList(list[str]):
    reads = 0

    def __getitem__(self, i: Any) -> Any:
        _CountingList.reads += 1
        return super().__getitem__(i)


class _CountingDict(dict[Any, Any]):
    scans = 0

    def items(self) -> Any:
        _CountingDict.scans += 1
        return super().items()

    def __iter__(self) -> Any:
        _CountingDict.scans += 1
        return super().__iter__()


async def test_memory_session_listing_and_deletion_do_not_visit_every_session() -> None:
    from app.backends.memory import MemoryBackend
    from app.domain.locks import LockRequest
    from app.syntax import Pattern

    backend = MemoryBackend()
    for i in range(3000):
        await backend.session_put("default", f"s{i:05d}", b"{}", 0)
        await backend.lock_acquire("default", f"s{i:05d}", "l",
                                   LockRequest("o", 0))
    order = _CountingList(backend.sessions.orders["default"])
    backend.sessions.orders["default"] = order
    backend.locks.slots = _CountingDict(backend.locks.slots)
    items, cursor = await backend.session_list("default", Pattern.compile("s01*"), limit=2,
                                               after=None)
    assert [i.id for i in items] == ["s01000", "s01001"] and cursor == "s01001"
    assert _CountingList.reads <= 40  # found by bisection, not by sorting 3,000 ids
    assert await backend.session_delete("default", "s02000")
    assert _CountingDict.scans == 0  # its locks found by name, not by visiting every lock
    assert (await backend.lock_get("default", "s02000", "l"))[0] is None
    assert (await backend.lock_get("default", "s02001", "l"))[0] is not None
