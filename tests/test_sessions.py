"""Sessions (API.md section 5) through HTTP, on every backend: the session record and its
idle TTL, variables and versions, batches, chat state, session locks, events, fencing."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from tests.helpers import ISO_MS, events, problem, revision

S = "/v1/sessions/s1"


async def register(client: httpx.AsyncClient, name: str, type_: str, value: Any,
                   sid: str = "s1", **fields: Any) -> dict[str, Any]:
    r = await client.post(f"/v1/sessions/{sid}/variables",
                          json={"name": name, "type": type_, "value": value, **fields})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def wait_for(client: httpx.AsyncClient, since: int, **params: Any) -> dict[str, Any]:
    """The first event after ``since`` matching ``params``, waiting for it (long poll)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = await client.get("/v1/events", params={"since": since, "wait": "5s", **params})
        found: list[dict[str, Any]] = r.json()["events"]
        if found:
            return found[0]
        since = r.json()["revision"]
    raise AssertionError(f"no event {params} after {since}")


# -- the session record ----------------------------------------------------------------


async def test_session_life(client: httpx.AsyncClient) -> None:
    assert (await client.get(S)).status_code == 404
    r = await client.put(S, json={"metadata": {"user": "ada"}})
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["session_id"] == "s1" and made["metadata"] == {"user": "ada"}
    assert made["ttl"] is None and made["expires_at"] is None
    assert ISO_MS.fullmatch(made["created_at"]) and made["variable_count"] == 0

    r = await client.put(S, json={"metadata": {"user": "bob"}, "ttl": "1h"})
    assert r.status_code == 200
    assert r.json()["metadata"] == {"user": "bob"} and r.json()["ttl"] == 3600
    assert r.json()["created_at"] == made["created_at"]
    await register(client, "x", "integer", 1)
    got = (await client.get(S)).json()
    assert got["variable_count"] == 1 and got["ttl"] == 3600 and got["expires_at"]

    assert (await client.put(S)).status_code == 200  # empty body: no metadata, no ttl
    assert (await client.get(S)).json()["metadata"] == {}

    assert (await client.delete(S)).status_code == 204
    problem(await client.get(S), 404, "not_found")
    assert (await client.get(f"{S}/variables")).json() == {"items": []}
    assert (await client.delete(S)).status_code == 204  # idempotent

    found = await events(client, session="s1", types="session")
    assert [(e["type"], e.get("change"), e.get("created")) for e in found] == [
        ("session.updated", "metadata", True),
        ("session.updated", "metadata", False),
        ("session.updated", "metadata", False),
        ("session.deleted", None, None),
    ]
    assert found[0]["value"] == {"user": "ada"} and found[0]["old_value"] is None
    assert found[1]["old_value"] == {"user": "ada"} and found[1]["ttl"] == 3600
    assert found[-1]["expired"] is False and found[-1]["key"] == "s1"


async def test_a_session_is_created_by_its_first_write(client: httpx.AsyncClient) -> None:
    await register(client, "x", "integer", 1)
    assert (await client.get(S)).json()["metadata"] == {}
    # reads and writes that change nothing create nothing
    for call in (
        client.get("/v1/sessions/s2/variables"),
        client.get("/v1/sessions/s2/subscriptions/t"),
        client.delete("/v1/sessions/s2/subscriptions/t"),
        client.delete("/v1/sessions/s2/threads/t/state"),
        client.get("/v1/sessions/s2/values"),
    ):
        assert (await call).status_code in (200, 204)
    problem(await client.get("/v1/sessions/s2"), 404, "not_found")
    problem(await client.get("/v1/sessions/s2/snapshot"), 404, "not_found")
    assert (await client.post("/v1/sessions/s3/dedupe", json={"key": "m"})).status_code == 200
    assert (await client.get("/v1/sessions/s3")).status_code == 200


async def test_listing_sessions(client: httpx.AsyncClient) -> None:
    for sid in ("b", "a", "chat-1", "chat-2", "chat-3"):
        assert (await client.put(f"/v1/sessions/{sid}")).status_code == 201
    r = await client.get("/v1/sessions")
    assert [s["session_id"] for s in r.json()["items"]] == ["a", "b", "chat-1", "chat-2",
                                                            "chat-3"]
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"pattern": "chat-*", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/sessions", params=params)).json()
        seen += [s["session_id"] for s in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["chat-1", "chat-2", "chat-3"]
    assert (await client.get("/v1/sessions", params={"pattern": "a"})).json()["items"][0][
        "session_id"] == "a"
    problem(await client.get("/v1/sessions", params={"pattern": ""}), 400, "invalid_pattern")
    problem(await client.get("/v1/sessions", params={"cursor": "!!"}), 400, "invalid_request")


@pytest.mark.parametrize("sid", ["a|b", "a*", "a%0Ab", "a%20b", "x" * 513])
async def test_bad_session_ids(client: httpx.AsyncClient, sid: str) -> None:
    problem(await client.put(f"/v1/sessions/{sid}"), 400, "invalid_key")
    problem(await client.post(f"/v1/sessions/{sid}/variables",
                              json={"name": "v", "type": "json", "value": 1}), 400, "invalid_key")


async def test_bad_session_bodies(client: httpx.AsyncClient) -> None:
    problem(await client.put(S, json={"metadata": [1]}), 422, "validation_failed")
    problem(await client.put(S, json={"ttl": -1}), 400, "invalid_ttl")
    problem(await client.put(S, json={"ttl": "soon"}), 400, "invalid_ttl")
    problem(await client.put(S, json={"other": 1}), 422, "validation_failed")
    problem(await client.put(S, content=b"x", headers={"content-type": "text/plain"}), 415,
            "unsupported_media_type")
    assert (await client.get(S)).status_code == 404


async def test_idle_ttl_expires_the_whole_session(client: httpx.AsyncClient) -> None:
    await client.put(S, json={"ttl": 1})
    await register(client, "x", "integer", 1)
    await client.put(f"{S}/threads/t/state", json={"a": 1})
    await client.post(f"{S}/locks/reply", json={"owner": "bot", "ttl": 30})
    since = await revision(client)
    expired = await wait_for(client, since, types="session.deleted", session="s1")
    assert expired["expired"] is True and expired["key"] == "s1"
    problem(await client.get(S), 404, "not_found")
    assert (await client.get(f"{S}/variables")).json() == {"items": []}
    problem(await client.get(f"{S}/threads/t/state"), 404, "not_found")
    problem(await client.get(f"{S}/locks/reply"), 404, "not_found")
    assert (await client.get("/v1/sessions")).json()["items"] == []


async def test_writes_move_the_idle_deadline_and_reads_do_not(
    client: httpx.AsyncClient,
) -> None:
    first = (await client.put(S, json={"ttl": 60})).json()["expires_at"]
    await asyncio.sleep(0.01)
    await client.get(S)
    await client.get(f"{S}/snapshot")
    assert (await client.get(S)).json()["expires_at"] == first
    for write in (
        client.post(f"{S}/variables", json={"name": "x", "type": "integer", "value": 1}),
        client.put(f"{S}/subscriptions/t"),
        client.post(f"{S}/dedupe", json={"key": "k"}),
        client.put(f"{S}/channels/c/state", json={}),
        client.post(f"{S}/locks/l", json={"owner": "o"}),
    ):
        assert (await write).status_code < 300
        await asyncio.sleep(0.005)
        later = (await client.get(S)).json()["expires_at"]
        assert later > first
        first = later


# -- variables -------------------------------------------------------------------------


async def test_variable_life(client: httpx.AsyncClient) -> None:
    var = await register(client, "temperature", "float", 0.7, constraints={"min": 0, "max": 1},
                         metadata={"unit": "none"}, description="sampling temperature")
    assert var["id"].startswith("var_") and len(var["id"]) > 8
    assert var["metadata"] == {"unit": "none"} and var["description"] == "sampling temperature"
    assert var["created_at"] == var["updated_at"]
    for ident in ("temperature", var["id"]):
        r = await client.get(f"{S}/variables/{ident}")
        assert r.json() == var and r.headers["etag"] == '"1"'
    assert (await client.get(f"{S}/variables/temperature",
                             headers={"if-none-match": '"1"'})).status_code == 304

    r = await client.put(f"{S}/variables/{var['id']}",
                         json={"value": 0.2, "metadata": {"by": "agent", "unit": None}})
    assert r.status_code == 200
    updated = r.json()
    assert updated["version"] == 2 and updated["value"] == 0.2
    assert updated["metadata"] == {"by": "agent"}  # merged as a merge patch
    assert updated["created_at"] == var["created_at"] and updated["id"] == var["id"]

    problem(await client.post(f"{S}/variables", json={"name": "temperature", "type": "json",
                                                      "value": 1}), 409, "already_exists")
    await register(client, "alpha", "json", {"a": 1})
    listed = (await client.get(f"{S}/variables")).json()["items"]
    assert [v["name"] for v in listed] == ["alpha", "temperature"]

    assert (await client.delete(f"{S}/variables/temperature")).status_code == 204
    problem(await client.get(f"{S}/variables/temperature"), 404, "not_found")
    problem(await client.get(f"{S}/variables/{var['id']}"), 404, "not_found")
    problem(await client.delete(f"{S}/variables/temperature"), 404, "not_found")
    problem(await client.put(f"{S}/variables/temperature", json={"value": 1}), 404, "not_found")
    again = await register(client, "temperature", "string", "warm")
    assert again["id"] != var["id"] and again["version"] == 1

    found = await events(client, session="s1", types="variable")
    assert [(e["type"], e["key"]) for e in found] == [
        ("variable.created", "temperature"), ("variable.updated", "temperature"),
        ("variable.created", "alpha"), ("variable.deleted", "temperature"),
        ("variable.created", "temperature"),
    ]
    assert found[0]["variable_type"] == "float" and found[0]["id"] == var["id"]
    assert found[1] == {**found[1], "value": 0.2, "old_value": 0.7, "version": 2,
                        "id": var["id"], "session": "s1"}
    assert found[3]["old_value"] == 0.2 and found[3]["value"] is None


async def test_versions_grow_by_one_and_if_match_guards_writes(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "n", "integer", 0)
    for i in range(1, 6):
        r = await client.put(f"{S}/variables/n", json={"value": i},
                             headers={"if-match": f'"{i}"'})
        assert r.status_code == 200 and r.json()["version"] == i + 1
    current = (await client.get(f"{S}/variables/n")).json()
    body = problem(await client.put(f"{S}/variables/n", json={"value": 99},
                                    headers={"if-match": '"3"'}), 412, "revision_mismatch")
    assert body["current"] == current
    problem(await client.delete(f"{S}/variables/n", headers={"if-match": '"3"'}), 412,
            "revision_mismatch")
    assert (await client.get(f"{S}/variables/n")).json() == current
    problem(await client.put(f"{S}/variables/n", json={"value": 1},
                             headers={"if-match": "nope"}), 400, "invalid_request")
    assert (await client.delete(f"{S}/variables/n", headers={"if-match": '"6"'})).status_code \
        == 204


async def test_concurrent_writes_each_take_one_version(client: httpx.AsyncClient) -> None:
    await register(client, "n", "integer", 0)
    replies = await asyncio.gather(*(client.put(f"{S}/variables/n", json={"value": i})
                                     for i in range(30)))
    assert sorted(r.json()["version"] for r in replies) == list(range(2, 32))
    assert (await client.get(f"{S}/variables/n")).json()["version"] == 31


async def test_batch_read(client: httpx.AsyncClient) -> None:
    a = await register(client, "a", "integer", 1)
    await register(client, "b", "string", "two")
    r = await client.get(f"{S}/values", params={"names": "a,b,missing"})
    assert r.json() == {"values": {"a": 1, "b": "two"}}
    r = await client.get(f"{S}/values", params={"names": f"{a['id']},b"})
    assert r.json() == {"values": {a["id"]: 1, "b": "two"}}
    assert (await client.get(f"{S}/values")).json() == {"values": {"a": 1, "b": "two"}}
    assert (await client.get(f"{S}/values", params={"names": ""})).json() == {"values": {}}
    problem(await client.get(f"{S}/values", params={"names": "a,b c"}), 400, "invalid_key")


async def test_atomic_batch_with_one_bad_value_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    await register(client, "a", "integer", 1, constraints={"max": 10})
    await register(client, "b", "string", "x")
    await register(client, "c", "boolean", True)
    before = (await client.get(f"{S}/variables")).json()
    rev = await revision(client)
    r = await client.patch(f"{S}/values", json={"updates": {"a": 5, "b": 7, "c": False,
                                                            "nope": 1}})
    body = problem(r, 422, "constraint_violation")
    assert set(body["errors"]) == {"b", "nope"}
    assert body["errors"]["b"]["constraint"] == "type"
    assert body["errors"]["b"]["message"] == (
        "Variable 'b' must be a string, but 7 (an integer) was given.")
    assert body["errors"]["nope"]["code"] == "not_found"
    assert "Nothing was written" in body["detail"]
    assert (await client.get(f"{S}/variables")).json() == before
    assert await revision(client) == rev

    r = await client.patch(f"{S}/values", json={"updates": {"a": 11}, "atomic": True})
    assert problem(r, 422, "constraint_violation")["errors"]["a"]["constraint"] == "max"
    r = await client.patch(f"{S}/values", json={"updates": {"nope": 11}})
    problem(r, 422, "validation_failed")
    assert await revision(client) == rev


async def test_atomic_batch_is_one_revision_and_one_event(client: httpx.AsyncClient) -> None:
    a = await register(client, "a", "integer", 1)
    b = await register(client, "b", "string", "x")
    rev = await revision(client)
    r = await client.patch(f"{S}/values", json={"updates": {"b": "y", "a": 2},
                                                "metadata": {"step": 1}})
    assert r.status_code == 200, r.text
    assert r.json() == {"updated": ["b", "a"], "errors": {}, "revision": rev + 1,
                        "versions": {"b": 2, "a": 2}}
    assert await revision(client) == rev + 1
    (event,) = await events(client, since=rev)
    assert event["type"] == "variable.updated" and event["revision"] == rev + 1
    assert event["batch"] is True and event["key"] == "a"  # keyed by the first name
    assert event["value"] == 2 and event["old_value"] == 1
    assert event["updates"] == {
        "a": {"id": a["id"], "version": 2, "value": 2, "old_value": 1},
        "b": {"id": b["id"], "version": 2, "value": "y", "old_value": "x"},
    }
    got = (await client.get(f"{S}/variables/b")).json()
    assert got["metadata"] == {"step": 1} and got["version"] == 2


async def test_partial_batch_writes_what_fits(client: httpx.AsyncClient) -> None:
    await register(client, "a", "integer", 1)
    await register(client, "b", "string", "x")
    rev = await revision(client)
    r = await client.patch(f"{S}/values", json={"updates": {"a": 2, "b": 3, "zz": 0},
                                                "atomic": False})
    assert r.status_code == 200
    body = r.json()
    assert body["updated"] == ["a"] and body["revision"] == rev + 1
    assert body["versions"] == {"a": 2}
    assert set(body["errors"]) == {"b", "zz"}
    assert body["errors"]["b"]["constraint"] == "type"
    assert (await client.get(f"{S}/values")).json() == {"values": {"a": 2, "b": "x"}}
    (event,) = await events(client, since=rev)
    assert list(event["updates"]) == ["a"]
    # nothing fits: nothing written, no revision
    r = await client.patch(f"{S}/values", json={"updates": {"b": 3}, "atomic": False})
    assert r.json() == {"updated": [], "errors": {"b": r.json()["errors"]["b"]},
                        "revision": None, "versions": {}}
    assert await revision(client) == rev + 1


async def test_batch_bodies_are_checked(client: httpx.AsyncClient) -> None:
    a = await register(client, "a", "integer", 1)
    r = await client.patch(f"{S}/values", json={"updates": {"a": 2, a["id"]: 3}})
    body = problem(r, 422, "validation_failed")
    assert "more than once" in body["errors"][a["id"]]["message"]
    problem(await client.patch(f"{S}/values", json={"updates": [1]}), 422, "validation_failed")
    problem(await client.patch(f"{S}/values", json={"updates": {}, "atomic": "yes"}), 422,
            "validation_failed")
    problem(await client.patch(f"{S}/values", json={"updates": {"var_": 1}}), 400,
            "invalid_key")
    assert (await client.get(f"{S}/variables/a")).json()["version"] == 1


async def test_value_size_limit(make_client: Any) -> None:
    async with make_client(max_value_bytes=100) as client:
        problem(await client.post(f"{S}/variables", json={"name": "v", "type": "string",
                                                          "value": "x" * 200}), 413,
                "payload_too_large")
        await register(client, "v", "string", "short")
        problem(await client.put(f"{S}/variables/v", json={"value": "x" * 200}), 413,
                "payload_too_large")
        problem(await client.patch(f"{S}/values", json={"updates": {"v": "x" * 200}}), 413,
                "payload_too_large")
        problem(await client.put(f"{S}/threads/t/state", json={"x": "x" * 200}), 413,
                "payload_too_large")
        assert (await client.get(f"{S}/variables/v")).json()["version"] == 1


# -- chat state ------------------------------------------------------------------------


async def test_subscriptions(client: httpx.AsyncClient) -> None:
    assert (await client.get(f"{S}/subscriptions/t1")).json() == {"subscribed": False}
    for _ in range(2):
        assert (await client.put(f"{S}/subscriptions/t1")).status_code == 204
    await client.put(f"{S}/subscriptions/t0")
    assert (await client.get(f"{S}/subscriptions/t1")).json() == {"subscribed": True}
    assert (await client.get(f"{S}/subscriptions")).json() == {"items": ["t0", "t1"]}
    for _ in range(2):
        assert (await client.delete(f"{S}/subscriptions/t1")).status_code == 204
    assert (await client.get(f"{S}/subscriptions")).json() == {"items": ["t0"]}
    found = await events(client, session="s1")
    assert [(e["change"], e["thread"]) for e in found] == [
        ("subscribe", "t1"), ("subscribe", "t0"), ("unsubscribe", "t1")]  # changes only
    problem(await client.put(f"{S}/subscriptions/a*b"), 400, "invalid_key")


async def test_dedupe_window(client: httpx.AsyncClient) -> None:
    async def seen(key: str, limit: int = 3) -> bool:
        r = await client.post(f"{S}/dedupe", json={"key": key, "limit": limit})
        assert r.status_code == 200, r.text
        duplicate: bool = r.json()["duplicate"]
        return duplicate

    assert [await seen(k) for k in ("m1", "m2", "m1", "m3", "m4")] == [
        False, False, True, False, False]
    order = (await client.get(f"{S}/snapshot")).json()["dedupe_order"]
    assert order == ["m2", "m3", "m4"]  # the 3 most recent, oldest first
    assert await seen("m1") is False  # fell out of the window
    assert (await client.get(f"{S}/snapshot")).json()["dedupe_order"] == ["m3", "m4", "m1"]
    assert await seen("m5", limit=1) is False
    assert (await client.get(f"{S}/snapshot")).json()["dedupe_order"] == ["m5"]
    found = await events(client, session="s1")
    assert [(e["dedupe_key"], e["evicted"]) for e in found] == [
        ("m1", []), ("m2", []), ("m3", []), ("m4", ["m1"]), ("m1", ["m2"]),
        ("m5", ["m3", "m4", "m1"])]
    weird = "ü/\"\\ x\u0001"
    since = await revision(client)
    assert await seen(weird) is False and await seen(weird) is True
    (event,) = await events(client, since=since)
    assert event["dedupe_key"] == weird
    assert (await client.get(f"{S}/snapshot")).json()["dedupe_order"][-1] == weird
    problem(await client.post(f"{S}/dedupe", json={"key": ""}), 422, "validation_failed")
    problem(await client.post(f"{S}/dedupe", json={"key": "k", "limit": 0}), 422,
            "validation_failed")


async def test_concurrent_dedupe_in_one_process(client: httpx.AsyncClient) -> None:
    replies = await asyncio.gather(*(client.post(f"{S}/dedupe", json={"key": "same"})
                                     for _ in range(50)))
    assert sorted(r.json()["duplicate"] for r in replies) == [False] + [True] * 49


@pytest.mark.parametrize("kind", ["threads", "channels"])
async def test_state_maps(client: httpx.AsyncClient, kind: str) -> None:
    url = f"{S}/{kind}/x1/state"
    problem(await client.get(url), 404, "not_found")
    r = await client.put(url, json={"topic": "cats", "n": 1})
    assert r.status_code == 201 and r.json() == {"topic": "cats", "n": 1}
    r = await client.put(url, json={"topic": "dogs", "n": 1})
    assert r.status_code == 200
    r = await client.patch(url, json={"n": 2, "topic": None, "tags": {"a": 1}},
                           headers={"content-type": "application/merge-patch+json"})
    assert r.status_code == 200 and r.json() == {"n": 2, "tags": {"a": 1}}
    r = await client.patch(url, json={"tags": {"b": 2}})  # application/json is a merge patch
    assert r.json() == {"n": 2, "tags": {"a": 1, "b": 2}}
    assert (await client.get(url)).json() == {"n": 2, "tags": {"a": 1, "b": 2}}
    problem(await client.put(url, json=[1]), 422, "validation_failed")
    problem(await client.patch(url, json=[1]), 422, "validation_failed")
    problem(await client.put(url, content=b"x", headers={"content-type": "text/plain"}), 415,
            "unsupported_media_type")
    assert (await client.delete(url)).status_code == 204
    assert (await client.delete(url)).status_code == 204
    problem(await client.get(url), 404, "not_found")
    r = await client.patch(f"{S}/{kind}/x2/state", json={"a": 1})  # creates from {}
    assert r.status_code == 201 and r.json() == {"a": 1}
    problem(await client.get(f"{S}/{kind}/bad*id/state"), 400, "invalid_key")

    found = await events(client, session="s1")
    one = kind[:-1]
    assert [(e["change"], e[one], e["value"]) for e in found] == [
        (f"{one}_state", "x1", {"topic": "cats", "n": 1}),
        (f"{one}_state", "x1", {"topic": "dogs", "n": 1}),
        (f"{one}_state", "x1", {"n": 2, "tags": {"a": 1}}),
        (f"{one}_state", "x1", {"n": 2, "tags": {"a": 1, "b": 2}}),
        (f"{one}_state", "x1", None),
        (f"{one}_state", "x2", {"a": 1}),
    ]


async def test_concurrent_merge_patches_lose_nothing(client: httpx.AsyncClient) -> None:
    url = f"{S}/threads/t/state"
    await asyncio.gather(*(client.patch(url, json={f"k{i}": i}) for i in range(25)))
    assert (await client.get(url)).json() == {f"k{i}": i for i in range(25)}


# -- session locks ---------------------------------------------------------------------


async def test_session_locks(client: httpx.AsyncClient) -> None:
    r = await client.post(f"{S}/locks/reply", json={"owner": "bot", "ttl": 30})
    assert r.status_code == 200 and r.json()["token"] == 1
    assert (await client.get(S)).status_code == 200  # a lock call is a use of the session
    r = await client.post(f"{S}/locks/reply", json={"owner": "other", "mode": "queue",
                                                    "entry": {"text": "hi"}})
    assert r.status_code == 202
    problem(await client.post(f"{S}/locks/reply", json={"owner": "other"}), 409, "lock_held")
    # the same name elsewhere is another lock
    assert (await client.post("/v1/locks/reply", json={"owner": "x"})).json()["token"] == 1
    assert (await client.post("/v1/sessions/s2/locks/reply",
                              json={"owner": "x"})).json()["token"] == 1
    listed = (await client.get(f"{S}/locks")).json()["items"]
    assert [(i["name"], i["owner"], i["pending_count"]) for i in listed] == [("reply", "bot", 1)]
    assert (await client.get(f"{S}/locks/reply")).json()["owner"] == "bot"

    snap = (await client.get(f"{S}/snapshot")).json()
    assert snap["locks"]["reply"]["owner"] == "bot" and snap["locks"]["reply"]["token"] == 1
    assert snap["locks"]["reply"]["ttl"] == 30
    assert snap["pending_locks"] == {"reply": [{"text": "hi"}]}

    r = await client.post(f"{S}/locks/reply/release", json={"owner": "bot", "token": 1})
    assert r.json()["pending"] == [{"text": "hi"}]
    snap = (await client.get(f"{S}/snapshot")).json()
    assert snap["locks"] == {} and snap["pending_locks"] == {}

    found = await events(client, session="s1", types="lock")
    assert [e["type"] for e in found] == ["lock.acquired", "lock.queued", "lock.released"]
    assert all(e["session"] == "s1" for e in found)


async def test_a_refused_lock_call_creates_no_session(client: httpx.AsyncClient) -> None:
    base = "/v1/sessions/s9/locks"
    problem(await client.post(f"{base}/l", json={"owner": ""}), 422, "validation_failed")
    problem(await client.post(f"{base}/l", json={"owner": "o", "ttl": "x"}), 400,
            "invalid_ttl")
    problem(await client.post(f"{base}/a*b", json={"owner": "o"}), 400, "invalid_key")
    problem(await client.post(f"{base}/l/release", json={"owner": "o", "token": 1}), 409,
            "lock_not_held")
    assert (await client.get(f"{base}/l")).status_code == 404  # a read creates nothing
    problem(await client.get("/v1/sessions/s9"), 404, "not_found")
    assert (await client.get("/v1/sessions")).json()["items"] == []
    assert (await client.post(f"{base}/l", json={"owner": "o"})).status_code == 200
    assert (await client.get("/v1/sessions/s9")).status_code == 200


async def test_pending_entries_of_a_free_session_lock_are_in_the_snapshot(
    client: httpx.AsyncClient,
) -> None:
    await client.post(f"{S}/locks/l", json={"owner": "a", "ttl": 30})
    await client.post(f"{S}/locks/l", json={"owner": "b", "mode": "debounce", "entry": 1})
    await client.post(f"{S}/locks/l", json={"owner": "b", "mode": "debounce", "entry": 2})
    await client.post(f"{S}/locks/l/force-release")
    await client.post(f"{S}/locks/l", json={"owner": "a", "ttl": 30})
    await client.post(f"{S}/locks/l", json={"owner": "b", "mode": "queue", "entry": 3})
    await client.post(f"{S}/locks/l/force-release")  # hands over [3]; the lock is free
    since = await revision(client)
    await client.post(f"{S}/locks/m", json={"owner": "a", "ttl": 0.3})
    await client.post(f"{S}/locks/m", json={"owner": "b", "mode": "queue", "entry": "kept"})
    await wait_for(client, since, types="lock.expired", session="s1")  # its entry stays
    snap = (await client.get(f"{S}/snapshot")).json()
    assert snap["locks"] == {}
    assert snap["pending_locks"] == {"m": ["kept"]}


async def test_deleting_a_session_frees_its_locks_but_never_reuses_tokens(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.post(f"{S}/locks/l", json={"owner": "a"})).json()["token"] == 1
    await client.post(f"{S}/locks/l", json={"owner": "b", "mode": "queue", "entry": 1})
    assert (await client.delete(S)).status_code == 204
    problem(await client.get(f"{S}/locks/l"), 404, "not_found")
    assert (await client.get(f"{S}/locks/l")).json()["pending_count"] == 0
    r = await client.post(f"{S}/locks/l", json={"owner": "c"})
    assert r.json()["token"] == 2 and r.json()["pending"] == []


# -- events and fencing ----------------------------------------------------------------


async def test_every_change_is_an_event_of_its_session(client: httpx.AsyncClient) -> None:
    start = await revision(client)
    await register(client, "v", "integer", 1)
    await register(client, "w", "integer", 1, sid="other")
    await client.put(f"{S}/variables/v", json={"value": 2})
    await client.patch(f"{S}/values", json={"updates": {"v": 3}})
    await client.put(f"{S}/subscriptions/t")
    await client.post(f"{S}/dedupe", json={"key": "k"})
    await client.put(f"{S}/threads/t/state", json={})
    await client.patch(f"{S}/channels/c/state", json={"a": 1})
    await client.delete(f"{S}/channels/c/state")
    await client.delete(f"{S}/variables/v")
    await client.put(S, json={"metadata": {"m": 1}})
    snap = (await client.get(f"{S}/snapshot")).json()
    await client.put("/v1/sessions/copy/snapshot", json=snap)
    await client.delete(S)
    rev = await revision(client)
    assert rev == start + 13  # one revision per change

    mine = await events(client, since=start, session="s1")
    assert [e["type"] for e in mine] == [
        "variable.created", "variable.updated", "variable.updated", "session.updated",
        "session.updated", "session.updated", "session.updated", "session.updated",
        "variable.deleted", "session.updated", "session.deleted",
    ]
    assert all(e["session"] == "s1" for e in mine)
    assert [e["key"] for e in mine if e["type"].startswith("session.")] == ["s1"] * 7
    (imported,) = await events(client, since=start, session="copy")
    assert imported["type"] == "session.imported" and imported["created"] is True
    assert [e["session"] for e in await events(client, since=start, session="other")] == [
        "other"]


def fenced_writes(lock: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Every kind of session write; the import keeps the fencing lock (same holder)."""
    return [
        ("put", S, {"json": {"metadata": {"x": 1}}}),
        ("post", f"{S}/variables", {"json": {"name": "w", "type": "integer", "value": 1}}),
        ("put", f"{S}/variables/v", {"json": {"value": 5}}),
        ("patch", f"{S}/values", {"json": {"updates": {"v": 5}}}),
        ("delete", f"{S}/variables/v", {}),
        ("put", f"{S}/subscriptions/t", {}),
        ("post", f"{S}/dedupe", {"json": {"key": "k"}}),
        ("put", f"{S}/threads/t/state", {"json": {"a": 1}}),
        ("patch", f"{S}/channels/c/state", {"json": {"a": 1}}),
        ("delete", f"{S}/threads/t0/state", {}),
        ("put", f"{S}/snapshot", {"json": {"locks": lock}}),
        ("delete", S, {}),
    ]


@pytest.mark.parametrize("scope", ["session", "namespace"])
async def test_fenced_writes(client: httpx.AsyncClient, scope: str) -> None:
    await register(client, "v", "integer", 1)
    await client.put(f"{S}/threads/t0/state", json={"keep": True})
    lock_url = f"{S}/locks/leader" if scope == "session" else "/v1/locks/leader"
    token = (await client.post(lock_url, json={"owner": "me"})).json()["token"]
    fence = {"fence-lock": "leader", "fence-token": str(token)}
    if scope == "session":
        fence["fence-session"] = "s1"
    # a newer holder makes the old token stale: every fenced write is refused
    await client.post(f"{lock_url}/force-release")
    assert (await client.post(lock_url, json={"owner": "new"})).json()["token"] == token + 1
    held = {"leader": {"owner": "new", "token": token + 1}} if scope == "session" else {}
    before = (await client.get(f"{S}/snapshot")).json()
    for method, url, kw in fenced_writes(held):
        r = await client.request(method, url, headers=fence, **kw)
        problem(r, 409, "stale_fence")
    after = (await client.get(f"{S}/snapshot")).json()
    assert after == before

    fence["fence-token"] = str(token + 1)
    for method, url, kw in fenced_writes(held):
        r = await client.request(method, url, headers=fence, **kw)
        assert r.status_code < 300, (method, url, r.text)
    problem(await client.get(S), 404, "not_found")


async def test_fence_comes_before_validation(client: httpx.AsyncClient) -> None:
    await register(client, "v", "integer", 1)
    stale = {"fence-lock": "nobody", "fence-token": "1"}
    problem(await client.put(f"{S}/variables/v", json={"value": "bad"}, headers=stale), 409,
            "stale_fence")
    problem(await client.put(f"{S}/variables/missing", json={"value": 1}, headers=stale), 409,
            "stale_fence")
    problem(await client.patch(f"{S}/threads/t/state", json=[1], headers=stale), 409,
            "stale_fence")
