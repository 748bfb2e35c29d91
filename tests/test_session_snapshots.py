"""Session snapshots (API.md section 5): one consistent document at one revision, import
that normalizes and refuses malformed documents without change, and round trips between
the memory and Redis backends."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.conftest import flush
from tests.helpers import ISO_MS, events, problem, revision
from tests.support import app_client

S = "/v1/sessions/s1"


async def build_rich_session(client: httpx.AsyncClient, sid: str) -> None:
    """A session using every section: each variable type, chat state, session locks."""
    base = f"/v1/sessions/{sid}"
    # 'digest' is free with an entry pending (as after its holder expired)
    r = await client.put(f"{base}/snapshot", json={"pending_locks": {"digest": [["later"]]}})
    assert r.status_code == 201, r.text
    assert (await client.put(base, json={"metadata": {"user": "ada", "n": [1, 2.5]},
                                         "ttl": "1h"})).status_code == 200
    variables: list[dict[str, Any]] = [
        {"name": "temperature", "type": "float", "value": 0.7,
         "constraints": {"min": 0, "max": 2}, "description": "sampling"},
        {"name": "max_tokens", "type": "integer", "value": 256, "constraints": {"min": 1},
         "metadata": {"owner": "planner"}},
        {"name": "persona", "type": "string", "value": "helpful",
         "constraints": {"pattern": "^[a-z]+$", "max_length": 20}},
        {"name": "verbose", "type": "boolean", "value": False},
        {"name": "mode", "type": "choice", "value": "fast",
         "constraints": {"choices": ["fast", "slow"]}},
        {"name": "query_vec", "type": "embedding", "value": [0.25, -1, 3e-5],
         "constraints": {"dimensions": 3}},
        {"name": "weights", "type": "tensor", "value": {"shape": [2, 2], "data": [[1, 2],
                                                                                  [3, 4.5]]},
         "constraints": {"shape": [2, None]}},
        {"name": "notes", "type": "json", "value": {"deep": {"list": [None, True, "ü"]}}},
    ]
    for var in variables:
        r = await client.post(f"{base}/variables", json=var)
        assert r.status_code == 201, r.text
    await client.put(f"{base}/variables/temperature", json={"value": 1.1})
    await client.patch(f"{base}/values", json={"updates": {"max_tokens": 512, "mode": "slow"}})
    for thread in ("thread-1", "thread-2"):
        await client.put(f"{base}/subscriptions/{thread}")
    for key in ("m1", "m2", "m3", "m4"):
        await client.post(f"{base}/dedupe", json={"key": key, "limit": 3})
    await client.put(f"{base}/threads/thread-1/state", json={"topic": "cats", "turn": 3})
    await client.put(f"{base}/channels/general/state", json={"muted": False})
    await client.post(f"{base}/locks/reply", json={"owner": "bot", "ttl": 600})
    await client.post(f"{base}/locks/reply", json={"owner": "u2", "mode": "queue",
                                                   "entry": {"text": "hi"}})
    await client.post(f"{base}/locks/reply", json={"owner": "u3", "mode": "queue",
                                                   "entry": {"text": "again"}})
    await client.post(f"{base}/locks/typing", json={"owner": "bot", "ttl": 0})
    await client.post(f"{base}/locks/summary", json={"owner": "bot", "ttl": 600})
    await client.post(f"{base}/locks/summary", json={"owner": "x", "mode": "debounce",
                                                     "entry": 7})
    await client.post(f"{base}/locks/summary/force-release")
    await client.post(f"{base}/locks/summary", json={"owner": "bot", "ttl": 600})
    await client.post(f"{base}/locks/summary", json={"owner": "x", "mode": "debounce",
                                                     "entry": 8})
    r = await client.post(f"{base}/locks/summary/release", json={"owner": "bot", "token": 2})
    assert r.status_code == 200
    # on a free lock a debounce acquires it: 'summary' is held by x with token 3
    await client.post(f"{base}/locks/summary", json={"owner": "x", "mode": "debounce",
                                                     "entry": 9})


async def export(client: httpx.AsyncClient, sid: str) -> dict[str, Any]:
    r = await client.get(f"/v1/sessions/{sid}/snapshot")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """A snapshot without what an import renews: revision, id, write time, deadline."""
    return {k: v for k, v in doc.items()
            if k not in ("revision", "session_id", "updated_at", "expires_at")}


async def test_snapshot_document(client: httpx.AsyncClient) -> None:
    await build_rich_session(client, "s1")
    rev = await revision(client)
    r = await client.get(f"{S}/snapshot")
    assert r.headers["etag"] == f'"{rev}"'
    doc = r.json()
    assert list(doc) == [
        "session_id", "revision", "metadata", "ttl", "created_at", "updated_at", "expires_at",
        "variables", "variable_index", "subscriptions", "dedupe", "dedupe_order",
        "thread_state", "channel_state", "locks", "pending_locks",
    ]
    assert doc["session_id"] == "s1" and doc["revision"] == rev
    assert doc["metadata"] == {"user": "ada", "n": [1, 2.5]} and doc["ttl"] == 3600
    assert all(ISO_MS.fullmatch(doc[k]) for k in ("created_at", "updated_at", "expires_at"))
    index = doc["variable_index"]
    assert sorted(index) == ["max_tokens", "mode", "notes", "persona", "query_vec",
                             "temperature", "verbose", "weights"]
    for name, var_id in index.items():
        var = doc["variables"][var_id]
        assert var["id"] == var_id and var["name"] == name
        assert set(var) == {"id", "name", "type", "value", "constraints", "metadata",
                            "description", "version", "created_at", "updated_at"}
    temperature = doc["variables"][index["temperature"]]
    assert temperature["value"] == 1.1 and temperature["version"] == 2
    assert doc["variables"][index["mode"]]["value"] == "slow"
    assert doc["subscriptions"] == ["thread-1", "thread-2"]
    assert doc["dedupe"] == ["m2", "m3", "m4"] and doc["dedupe_order"] == ["m2", "m3", "m4"]
    assert doc["thread_state"] == {"thread-1": {"topic": "cats", "turn": 3}}
    assert doc["channel_state"] == {"general": {"muted": False}}
    assert set(doc["locks"]) == {"reply", "summary", "typing"}
    reply = doc["locks"]["reply"]
    assert reply["owner"] == "bot" and reply["token"] == 1 and reply["ttl"] == 600
    assert doc["locks"]["typing"]["expires_at"] is None and doc["locks"]["typing"]["ttl"] is None
    assert doc["pending_locks"] == {"digest": [["later"]],
                                    "reply": [{"text": "hi"}, {"text": "again"}]}


async def test_import_into_another_session(client: httpx.AsyncClient) -> None:
    await build_rich_session(client, "s1")
    original = await export(client, "s1")
    r = await client.put("/v1/sessions/copy/snapshot", json=original)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["session_id"] == "copy" and body["created"] is True
    assert body["revision"] == await revision(client)
    assert body["tokens"] == {"reply": 1, "summary": 3, "typing": 1}
    copy = await export(client, "copy")
    assert copy["session_id"] == "copy" and copy["revision"] == body["revision"]
    assert comparable(copy) == comparable(original)
    # the copy is a live session: its variables, state and locks work
    r = await client.put("/v1/sessions/copy/variables/temperature", json={"value": 3})
    assert problem(r, 422, "constraint_violation")["errors"][0]["constraint"] == "max"
    r = await client.post("/v1/sessions/copy/locks/reply/release",
                          json={"owner": "bot", "token": 1})
    assert r.json()["pending"] == [{"text": "hi"}, {"text": "again"}]
    # importing again replaces (200); token 1 of 'reply' was given out and released
    # here, so that holder gets a fresh token; the others are the same holders
    r = await client.put("/v1/sessions/copy/snapshot", json=original)
    assert r.status_code == 200 and r.json()["created"] is False
    assert r.json()["tokens"] == {"reply": 2, "summary": 3, "typing": 1}
    again = comparable(await export(client, "copy"))
    assert again["locks"]["reply"]["token"] == 2
    again["locks"]["reply"]["token"] = 1
    assert again == comparable(original)


@asynccontextmanager
async def two_backends(redis_url: str) -> AsyncIterator[tuple[httpx.AsyncClient,
                                                              httpx.AsyncClient]]:
    flush(redis_url)
    async with app_client(Settings(backend="memory://")) as memory, \
            app_client(Settings(backend=redis_url)) as redis:
        yield memory, redis


@pytest.mark.parametrize("direction", ["memory-to-redis", "redis-to-memory"])
async def test_round_trip_between_backends(redis_url: str, direction: str) -> None:
    async with two_backends(redis_url) as (memory, redis):
        source, target = (memory, redis) if direction == "memory-to-redis" else (redis, memory)
        await build_rich_session(source, "origin")
        exported = await export(source, "origin")
        r = await target.put("/v1/sessions/moved/snapshot", json=exported)
        assert r.status_code == 201, r.text
        assert r.json()["tokens"] == {"reply": 1, "summary": 3, "typing": 1}
        again = await export(target, "moved")
        assert comparable(again) == comparable(exported)
        # and back, under yet another id
        r = await source.put("/v1/sessions/back/snapshot", json=again)
        assert comparable(await export(source, "back")) == comparable(exported)


async def test_import_normalizes_what_it_is_given(client: httpx.AsyncClient) -> None:
    doc = {
        "variables": [
            {"id": "var_given", "name": "a", "type": "integer", "value": 1, "version": 4},
            {"name": "b", "type": "string", "value": "x"},
        ],
        "subscriptions": {"t1": True, "t2": 1, "t3": False, "t4": None},
        "dedupe": {"m3": True, "m1": True},
        "dedupe_order": ["m2", "m1"],
        "thread_state": [["t1", {"a": 1}], {"id": "t2", "state": {"b": 2}}],
        "channel_state": {"c1": {"x": None}, "c2": None},
        "locks": [{"name": "l1", "owner": "o", "token": 5}],
        "pending_locks": [{"name": "l2", "entries": [1, 2]}, ["l3", []]],
        "unknown_section": {"ignored": True},
    }
    r = await client.put(f"{S}/snapshot", json=doc)
    assert r.status_code == 201, r.text
    snap = await export(client, "s1")
    assert snap["metadata"] == {} and snap["ttl"] is None and snap["expires_at"] is None
    a = snap["variables"]["var_given"]
    assert a["name"] == "a" and a["version"] == 4 and a["metadata"] == {}
    assert a["constraints"] == {} and a["description"] is None
    b_id = snap["variable_index"]["b"]
    assert b_id.startswith("var_") and snap["variables"][b_id]["version"] == 1
    assert snap["subscriptions"] == ["t1", "t2"]
    assert snap["dedupe_order"] == ["m2", "m1", "m3"] and snap["dedupe"] == ["m1", "m2", "m3"]
    assert snap["thread_state"] == {"t1": {"a": 1}, "t2": {"b": 2}}
    assert snap["channel_state"] == {"c1": {"x": None}}
    assert snap["locks"]["l1"]["owner"] == "o" and snap["locks"]["l1"]["token"] == 5
    assert snap["locks"]["l1"]["expires_at"] is None
    assert snap["pending_locks"] == {"l2": [1, 2]}
    # the imported state is live
    assert (await client.post(f"{S}/dedupe", json={"key": "m3"})).json()["duplicate"] is True
    r = await client.put(f"{S}/variables/a", json={"value": 2})
    assert r.json()["version"] == 5
    r = await client.post(f"{S}/locks/l2", json={"owner": "n"})
    assert r.json()["pending"] == [1, 2] and r.json()["token"] == 1

    # missing sections are empty: an empty document empties the session
    assert (await client.put(f"{S}/snapshot", json={})).status_code == 200
    snap = await export(client, "s1")
    assert (snap["variables"], snap["subscriptions"], snap["dedupe"], snap["thread_state"],
            snap["locks"], snap["pending_locks"]) == ({}, [], [], {}, {}, {})


MALFORMED: list[tuple[Any, str, str]] = [
    ([], "", "must be a JSON object"),
    ({"metadata": [1]}, "metadata", "must be a JSON object"),
    ({"ttl": -1}, "ttl", "must be a finite, non-negative duration"),
    ({"created_at": "yesterday"}, "created_at", "is not an RFC 3339 timestamp"),
    ({"variables": "x"}, "variables", "must be an object keyed by id, or a list"),
    ({"variables": [{"type": "json", "value": 1}]}, "variables.0.name", "is not valid"),
    ({"variables": [{"name": "v", "type": "nope", "value": 1}]}, "variables.0.type",
     "type 'nope' is not a variable type"),
    ({"variables": [{"name": "v", "type": "integer"}]}, "variables.0.value", "is missing"),
    ({"variables": [{"name": "v", "type": "integer", "value": 1, "constraints": {"max": 0}}]},
     "variables.0.value", "Variable 'v' must be at most 0 (its max), but 1 was given."),
    ({"variables": [{"name": "v", "type": "json", "value": 1},
                    {"name": "v", "type": "json", "value": 2}]}, "variables.1.name",
     "appears twice"),
    ({"variables": {"var_a": {"id": "var_b", "name": "v", "type": "json", "value": 1}}},
     "variables.var_a.id", "but the variable is listed as 'var_a'"),
    ({"variables": [{"id": "nope", "name": "v", "type": "json", "value": 1}]},
     "variables.0.id", "must be an id like 'var_...'"),
    ({"variables": [{"name": "v", "type": "json", "value": 1, "version": 0}]},
     "variables.0.version", "must be a positive integer"),
    ({"variables": [{"name": "v", "type": "json", "value": 1, "description": 5}]},
     "variables.0.description", "must be a string of at most 4096 characters, or null"),
    ({"variables": [{"name": "v", "type": "float", "value": 1, "constraints": {"min": "0"}}]},
     "variables.0.constraints.min", "constraint min must be a number"),
    ({"variables": [{"id": "var_1", "name": "v", "type": "json", "value": 1}],
      "variable_index": {"v": "var_2"}}, "variable_index.v", "no variable 'v' has that id"),
    ({"subscriptions": 5}, "subscriptions", "must be a list, or an object"),
    ({"subscriptions": ["a b"]}, "subscriptions.0", "thread id contains ' '"),
    ({"dedupe_order": "m1"}, "dedupe_order", "must be a list, oldest first"),
    ({"dedupe": [1]}, "dedupe.0", "dedupe keys must be strings"),
    ({"thread_state": {"t": [1]}}, "thread_state.t", "must be a JSON object"),
    ({"channel_state": {"a*": {}}}, "channel_state.a*", "channel id contains '*'"),
    ({"locks": {"l": {"owner": "", "token": 1}}}, "locks.l.owner", "must be 1-256 characters"),
    ({"locks": {"l": {"owner": "o", "token": 0}}}, "locks.l.token", "must be a positive integer"),
    ({"locks": {"l": {"owner": "o", "token": 1, "expires_at": 5}}}, "locks.l.expires_at",
     "must be an RFC 3339 timestamp"),
    ({"locks": {"l/release": {"owner": "o", "token": 1}}}, "locks.l/release", "action"),
    ({"pending_locks": {"l": 5}}, "pending_locks.l", "must be the list of pending entries"),
]


@pytest.mark.parametrize(("doc", "where", "message"), MALFORMED,
                         ids=[w or "document" for _, w, _ in MALFORMED])
async def test_a_malformed_document_changes_nothing(
    client: httpx.AsyncClient, doc: Any, where: str, message: str
) -> None:
    await build_rich_session(client, "s1")
    before = await export(client, "s1")
    rev = await revision(client)
    body = problem(await client.put(f"{S}/snapshot", json=doc), 422,
                   "constraint_violation" if "must be at most" in message
                   else "validation_failed")
    assert body["detail"].startswith(f"The snapshot is not valid: {where or 'the document'}: ")
    assert message in body["detail"], body["detail"]
    assert body["errors"][0]["location"] == ["body", *[
        int(p) if p.isdigit() else p for p in where.split(".") if p]]
    assert await export(client, "s1") == before
    assert await revision(client) == rev
    problem(await client.put("/v1/sessions/new/snapshot", json=doc), 422, body["code"])
    problem(await client.get("/v1/sessions/new"), 404, "not_found")


async def test_a_document_that_is_not_json_changes_nothing(client: httpx.AsyncClient) -> None:
    await client.put(S, json={"metadata": {"a": 1}})
    rev = await revision(client)
    problem(await client.put(f"{S}/snapshot", content=b"{", headers={
        "content-type": "application/json"}), 400, "invalid_request")
    problem(await client.put(f"{S}/snapshot", content=b"{}", headers={
        "content-type": "text/plain"}), 415, "unsupported_media_type")
    assert await revision(client) == rev


async def test_imported_tokens_are_never_reused(client: httpx.AsyncClient) -> None:
    for owner in ("a", "b"):
        r = await client.post(f"{S}/locks/l", json={"owner": owner})
        if owner == "a":
            await client.post(f"{S}/locks/l/force-release")
    assert (await client.get(f"{S}/locks/l")).json()["token"] == 2  # b holds token 2

    async def imported(owner: str, token: int) -> int:
        r = await client.put(f"{S}/snapshot",
                             json={"locks": {"l": {"owner": owner, "token": token}}})
        assert r.status_code == 200, r.text
        tokens: dict[str, int] = r.json()["tokens"]
        assert (await client.get(f"{S}/locks/l")).json()["token"] == tokens["l"]
        return tokens["l"]

    assert await imported("b", 2) == 2  # the same holder keeps its token
    assert await imported("c", 1) == 3  # token 1 was given out here: a fresh one
    assert await imported("c", 10) == 10  # never given out here: kept
    await client.post(f"{S}/locks/l/force-release")
    r = await client.post(f"{S}/locks/l", json={"owner": "d"})
    assert r.json()["token"] == 11  # the counter moved past the imported token


async def test_an_expired_imported_holder_is_free_and_keeps_its_pending_entries(
    client: httpx.AsyncClient,
) -> None:
    doc = {"locks": {"l": {"owner": "o", "token": 4, "expires_at": "2001-01-01T00:00:00Z"}},
           "pending_locks": {"l": ["waiting"]}}
    r = await client.put(f"{S}/snapshot", json=doc)
    assert r.json()["tokens"] == {}
    snap = await export(client, "s1")
    assert snap["locks"] == {} and snap["pending_locks"] == {"l": ["waiting"]}
    r = await client.post(f"{S}/locks/l", json={"owner": "n"})
    assert r.json()["token"] == 5 and r.json()["pending"] == ["waiting"]


async def test_an_imported_ttl_expires_the_session(client: httpx.AsyncClient) -> None:
    r = await client.put(f"{S}/snapshot", json={"ttl": 0.2, "metadata": {"a": 1}})
    assert r.status_code == 201
    since = r.json()["revision"]
    r = await client.get("/v1/events", params={"since": since, "wait": "5s",
                                               "types": "session.deleted"})
    (event,) = r.json()["events"]
    assert event["expired"] is True
    problem(await client.get(S), 404, "not_found")


# -- consistency under concurrent writes -----------------------------------------------


def replay(feed: list[dict[str, Any]], upto: int) -> dict[str, Any]:
    """The session's state after the events up to revision ``upto``."""
    state: dict[str, Any] = {"metadata": {}, "variables": {}, "subscriptions": set(),
                             "dedupe": [], "thread_state": {}, "channel_state": {}}
    for e in feed:
        if e["revision"] > upto:
            break
        kind = e["type"]
        if kind == "variable.created":
            state["variables"][e["key"]] = (e["value"], 1)
        elif kind == "variable.updated":
            updates = e["updates"] if e.get("batch") else {e["key"]: e}
            for name, u in updates.items():
                state["variables"][name] = (u["value"], u["version"])
        elif kind == "variable.deleted":
            del state["variables"][e["key"]]
        elif kind == "session.updated":
            change = e["change"]
            if change == "metadata":
                state["metadata"] = e["value"]
            elif change == "subscribe":
                state["subscriptions"].add(e["thread"])
            elif change == "unsubscribe":
                state["subscriptions"].discard(e["thread"])
            elif change == "dedupe":
                state["dedupe"] = [k for k in state["dedupe"] if k not in e["evicted"]]
                state["dedupe"].append(e["dedupe_key"])
            else:
                one = change.split("_")[0]
                section = state[change]
                if e["value"] is None:
                    section.pop(e[one], None)
                else:
                    section[e[one]] = e["value"]
    state["subscriptions"] = sorted(state["subscriptions"])
    return state


def state_of(snap: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": snap["metadata"],
        "variables": {v["name"]: (v["value"], v["version"]) for v in snap["variables"].values()},
        "subscriptions": snap["subscriptions"],
        "dedupe": snap["dedupe_order"],
        "thread_state": snap["thread_state"],
        "channel_state": snap["channel_state"],
    }


async def test_a_snapshot_taken_during_writes_is_the_state_at_its_revision(
    client: httpx.AsyncClient,
) -> None:
    if True:
        for name in ("a", "b", "c"):
            await client.post(f"{S}/variables", json={"name": name, "type": "integer",
                                                       "value": 0})
        rng = random.Random(7)
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            i = 0
            while not stop.is_set():
                i += 1
                op = rng.randrange(8)
                if op == 0:
                    await client.put(f"{S}/variables/{rng.choice('abc')}", json={"value": i})
                elif op == 1:
                    await client.patch(f"{S}/values", json={"updates": {"a": i, "c": -i}})
                elif op == 2:
                    thread = f"t{rng.randrange(4)}"
                    if rng.random() < 0.5:
                        await client.put(f"{S}/subscriptions/{thread}")
                    else:
                        await client.delete(f"{S}/subscriptions/{thread}")
                elif op == 3:
                    await client.post(f"{S}/dedupe", json={"key": f"k{w}-{i}", "limit": 5})
                elif op == 4:
                    await client.patch(f"{S}/threads/t{rng.randrange(3)}/state",
                                       json={f"w{w}": i})
                elif op == 5:
                    await client.delete(f"{S}/threads/t{rng.randrange(3)}/state")
                elif op == 6:
                    await client.put(f"{S}/channels/general/state", json={"by": w, "i": i})
                else:
                    name = f"tmp{w}"
                    r = await client.post(f"{S}/variables", json={"name": name,
                                                                   "type": "integer",
                                                                   "value": i})
                    if r.status_code == 409:
                        await client.delete(f"{S}/variables/{name}")

        writers = [asyncio.create_task(writer(w)) for w in range(6)]
        snapshots = []
        # Twelve snapshots or more, taken while the writers run, until the session's
        # log holds over 60 events (a loaded machine writes slower; bounded).
        deadline = asyncio.get_running_loop().time() + 60
        while len(snapshots) < 12 or snapshots[-1]["revision"] - snapshots[0]["revision"] < 80:
            assert asyncio.get_running_loop().time() < deadline, "the writers stalled"
            await asyncio.sleep(0.01)
            snapshots.append(await export(client, "s1"))
        stop.set()
        await asyncio.gather(*writers)

        feed = await events(client, since=0, session="s1", limit=10_000)
        assert len(feed) > 60, len(feed)
        revisions = [s["revision"] for s in snapshots]
        assert revisions == sorted(revisions) and len(set(revisions)) > 3
        for snap in snapshots:
            assert state_of(snap) == replay(feed, snap["revision"]), snap["revision"]
