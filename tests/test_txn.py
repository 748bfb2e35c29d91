"""Transactions and pattern deletes (API.md section 10) on every backend, through HTTP:
compares, branches, results, one revision and one event per transaction, the watch
filter on its changes, and every malformed shape refused with nothing changed.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.helpers import events, next_revision, problem, revision


async def txn(client: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    r = await client.post("/v1/txn", json=body, **kw)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


async def put(client: httpx.AsyncClient, key: str, value: Any) -> dict[str, Any]:
    r = await client.put(f"/v1/kv/{key}", content=json.dumps(value),
                         headers={"content-type": "application/json"})
    assert r.status_code in (200, 201), r.text
    out: dict[str, Any] = r.json()
    return out


async def test_success_branch_applies_every_op_at_one_revision_with_one_event(
    client: httpx.AsyncClient, backend: str,
) -> None:
    await put(client, "cfg", {"mode": "a", "n": 1})
    await put(client, "old", "x")
    n = await put(client, "n", 3)
    start = await revision(client)
    out = await txn(client, {
        "compare": [{"key": "leader", "revision": 0},
                    {"key": "cfg", "value": {"n": 1, "mode": "a"}},
                    {"key": "n", "version": 1}, {"key": "old", "exists": True}],
        "success": [{"op": "put", "key": "leader", "value": "a1", "ttl": "30s"},
                    {"op": "delete", "key": "old"},
                    {"op": "patch", "key": "cfg", "merge": {"mode": "b"}},
                    {"op": "increment", "key": "n", "by": 2},
                    {"op": "get", "key": "leader"},
                    {"op": "get", "key": "missing"},
                    {"op": "delete", "key": "never"}],
        "failure": [{"op": "get", "key": "leader"}],
    })
    rev = next_revision(backend, start, out["revision"])
    assert out["succeeded"] is True
    leader, deleted, cfg, counter, got, missing, never = out["results"]
    assert leader["value"] == "a1" and leader["revision"] == rev and leader["expires_at"]
    assert deleted == {"deleted": True} and never == {"deleted": False}
    assert cfg["value"] == {"mode": "b", "n": 1} and cfg["version"] == 2
    assert counter["value"] == 5 and counter["created_revision"] == n["revision"]
    assert got == leader and missing is None
    assert await revision(client) == rev
    found = await events(client, since=start)
    assert [e["type"] for e in found] == ["txn"]
    assert found[0]["revision"] == rev and found[0]["key"] == ""
    assert found[0]["changes"] == [
        {"type": "kv.put", "key": "leader", "value": "a1", "old_value": None},
        {"type": "kv.delete", "key": "old", "value": None, "old_value": "x"},
        {"type": "kv.put", "key": "cfg", "value": {"mode": "b", "n": 1},
         "old_value": {"mode": "a", "n": 1}},
        {"type": "kv.put", "key": "n", "value": 5, "old_value": 3},
    ]
    assert (await client.get("/v1/kv/old")).status_code == 404


async def test_failure_branch_runs_when_a_compare_fails(client: httpx.AsyncClient) -> None:
    first = await put(client, "leader", "a1")
    out = await txn(client, {
        "compare": [{"key": "leader", "revision": 0}],
        "success": [{"op": "put", "key": "leader", "value": "b1"}],
        "failure": [{"op": "get", "key": "leader"}],
    })
    assert out == {"succeeded": False, "revision": first["revision"], "results": [first]}


async def test_a_transaction_that_writes_nothing_takes_no_revision(
    client: httpx.AsyncClient,
) -> None:
    await put(client, "a", 1)
    start = await revision(client)
    out = await txn(client, {"success": [{"op": "get", "key": "a"},
                                         {"op": "delete", "key": "absent"}]})
    assert out["revision"] == start and out["results"][1] == {"deleted": False}
    out = await txn(client, {})
    assert out == {"succeeded": True, "revision": start, "results": []}
    assert await revision(client) == start
    assert await events(client, since=start) == []


@pytest.mark.parametrize(
    ("stored", "expected", "equal"),
    [
        ({"a": 1, "b": [1, 2]}, {"b": [1, 2], "a": 1}, True),  # member order is no matter
        (2**53 + 1, 2**53 + 1, True),
        (2**53 + 1, 2**53, False),  # exact beyond double precision
        (2**63 - 1, 2**63 - 2, False),
        (1, 1.0, True),  # JSON numbers
        (1, True, False),
        (0, False, False),
        (None, None, True),
        ("1", 1, False),
        ({"a": None}, {}, False),
        ([1, [2, {"x": "é"}]], [1, [2, {"x": "é"}]], True),
        (0.1, 0.1, True),
    ],
)
async def test_value_compares_are_json_equality(
    client: httpx.AsyncClient, stored: Any, expected: Any, equal: bool
) -> None:
    await put(client, "v", stored)
    out = await txn(client, {"compare": [{"key": "v", "value": expected}]})
    assert out["succeeded"] is equal


async def test_compares_on_absent_keys(client: httpx.AsyncClient) -> None:
    for compare, holds in [
        ({"key": "nope", "revision": 0}, True), ({"key": "nope", "version": 0}, True),
        ({"key": "nope", "exists": False}, True), ({"key": "nope", "exists": True}, False),
        ({"key": "nope", "value": None}, False), ({"key": "nope", "revision": 1}, False),
    ]:
        out = await txn(client, {"compare": [compare]})
        assert out["succeeded"] is holds, compare


async def test_lock_compares_hold_while_the_token_holds(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/locks/jobs/nightly", json={"owner": "w1", "ttl": "30s"})
    token = r.json()["token"]
    r = await client.post("/v1/sessions/s1/locks/reply", json={"owner": "bot"})
    session_token = r.json()["token"]
    ok = {"compare": [{"lock": "jobs/nightly", "token": token},
                      {"lock": "reply", "token": session_token, "session": "s1"}],
          "success": [{"op": "put", "key": "done", "value": True}]}
    assert (await txn(client, ok))["succeeded"] is True
    for wrong in ({"lock": "jobs/nightly", "token": token + 1},
                  {"lock": "reply", "token": session_token},  # not the namespace's lock
                  {"lock": "free", "token": 1}):
        assert (await txn(client, {"compare": [wrong]}))["succeeded"] is False, wrong
    await client.post("/v1/locks/jobs/nightly/release", json={"owner": "w1", "token": token})
    assert (await txn(client, ok))["succeeded"] is False


async def test_fence_headers_apply_to_the_whole_transaction(client: httpx.AsyncClient) -> None:
    token = (await client.post("/v1/locks/f", json={"owner": "o"})).json()["token"]
    body = {"success": [{"op": "put", "key": "a", "value": 1}]}
    start = await revision(client)
    r = await client.post("/v1/txn", json=body,
                          headers={"Fence-Lock": "f", "Fence-Token": str(token + 1)})
    problem(r, 409, "stale_fence")
    assert await revision(client) == start
    r = await client.post("/v1/txn", json=body,
                          headers={"Fence-Lock": "f", "Fence-Token": str(token)})
    assert r.status_code == 200 and r.json()["succeeded"] is True


async def test_json_patch_and_put_with_lease_in_a_transaction(client: httpx.AsyncClient) -> None:
    await put(client, "doc", {"tags": ["a"]})
    await client.post("/v1/leases", json={"ttl": "30s", "id": "agent-7"})
    out = await txn(client, {"success": [
        {"op": "patch", "key": "doc", "json_patch": [{"op": "add", "path": "/tags/-",
                                                      "value": "b"}]},
        {"op": "patch", "key": "fresh", "merge": {"x": 1}, "initial": {"y": 2}},
        {"op": "increment", "key": "count", "by": 1.5, "initial": 1, "ttl": 60},
        {"op": "put", "key": "seen", "value": 1, "lease": "agent-7"},
    ]})
    doc, fresh, count, seen = out["results"]
    assert doc["value"] == {"tags": ["a", "b"]}
    assert fresh["value"] == {"x": 1, "y": 2} and fresh["version"] == 1
    assert count["value"] == 2.5 and count["expires_at"]
    assert seen["expires_at"] is None
    lease = (await client.get("/v1/leases/agent-7")).json()
    assert lease["keys"] == ["seen"]


async def test_puts_on_several_leases_attach_to_each_or_to_none(
    client: httpx.AsyncClient,
) -> None:
    """One lease among several not live refuses the whole transaction (404, nothing
    written); all live, each key is on its own lease."""
    for lease_id in ("l1", "l2"):
        await client.post("/v1/leases", json={"ttl": "30s", "id": lease_id})
    start = await revision(client)
    r = await client.post("/v1/txn", json={"success": [
        {"op": "put", "key": "a", "value": 1, "lease": "l1"},
        {"op": "put", "key": "b", "value": 2, "lease": "gone"},
        {"op": "put", "key": "c", "value": 3, "lease": "l2"}]})
    assert "gone" in problem(r, 404, "lease_not_found")["detail"]
    assert await revision(client) == start
    await txn(client, {"success": [
        {"op": "put", "key": "a", "value": 1, "lease": "l1"},
        {"op": "put", "key": "b", "value": 2, "lease": "l2"},
        {"op": "put", "key": "c", "value": 3, "lease": "l1"}]})
    assert (await client.get("/v1/leases/l1")).json()["keys"] == ["a", "c"]
    assert (await client.get("/v1/leases/l2")).json()["keys"] == ["b"]


@pytest.mark.parametrize(
    ("ops", "status", "code"),
    [
        ([{"op": "patch", "key": "doc", "json_patch": [{"op": "test", "path": "/a",
                                                        "value": 2}]}], 412, "revision_mismatch"),
        ([{"op": "patch", "key": "missing", "merge": {"a": 1}}], 404, "not_found"),
        ([{"op": "increment", "key": "doc"}], 422, "validation_failed"),
        ([{"op": "increment", "key": "big", "by": 1}], 422, "validation_failed"),
        ([{"op": "put", "key": "x", "value": 1, "lease": "nope"}], 404, "lease_not_found"),
        ([{"op": "put", "key": "x", "value": "y" * 2000}], 413, "payload_too_large"),
    ],
)
async def test_an_op_that_cannot_apply_refuses_the_whole_transaction(
    make_client: Any, ops: list[dict[str, Any]], status: int, code: str
) -> None:
    async with make_client(max_value_bytes=1000) as client:
        await put(client, "doc", {"a": 1})
        await put(client, "big", 2**53 - 1)
        start = await revision(client)
        body = {"success": [{"op": "put", "key": "first", "value": 1}, *ops]}
        r = await client.post("/v1/txn", json=body)
        problem(r, status, code)
        assert await revision(client) == start
        assert (await client.get("/v1/kv/first")).status_code == 404


BAD_BODIES: list[Any] = [
    [],
    {"compare": {}},
    {"extra": 1},
    {"compare": [1]},
    {"compare": [{}]},
    {"compare": [{"key": "a"}]},
    {"compare": [{"key": "a", "revision": 1, "version": 1}]},
    {"compare": [{"key": "a", "revision": -1}]},
    {"compare": [{"key": "a", "revision": "1"}]},
    {"compare": [{"key": "a", "revision": True}]},
    {"compare": [{"key": "a", "version": 1.5}]},
    {"compare": [{"key": "a", "exists": 1}]},
    {"compare": [{"key": "a", "revision": 10**21}]},
    {"compare": [{"key": "a", "lock": "l", "token": 1}]},
    {"compare": [{"lock": "l"}]},
    {"compare": [{"lock": "l", "token": 0}]},
    {"compare": [{"lock": "l", "token": 1, "session": "a/b"}]},
    {"compare": [{"key": "a", "value": 1, "op": "<"}]},
    {"compare": [{"key": "bad key", "exists": True}]},
    {"compare": [{"key": 5, "exists": True}]},
    {"success": {}},
    {"success": [{"op": "nope", "key": "a"}]},
    {"success": [{"key": "a"}]},
    {"success": [{"op": "put", "key": "a"}]},
    {"success": [{"op": "put", "value": 1}]},
    {"success": [{"op": "put", "key": "a/history", "value": 1}]},
    {"success": [{"op": "put", "key": "a", "value": 1, "ttl": "soon"}]},
    {"success": [{"op": "put", "key": "a", "value": 1, "ttl": [1]}]},
    {"success": [{"op": "put", "key": "a", "value": 1, "ttl": "10s", "lease": "l"}]},
    {"success": [{"op": "put", "key": "a", "value": 1, "lease": 7}]},
    {"success": [{"op": "delete", "key": "a", "value": 1}]},
    {"success": [{"op": "patch", "key": "a"}]},
    {"success": [{"op": "patch", "key": "a", "merge": {}, "json_patch": []}]},
    {"success": [{"op": "patch", "key": "a", "json_patch": {}}]},
    {"success": [{"op": "increment", "key": "a", "by": "1"}]},
    {"success": [{"op": "increment", "key": "a", "by": True}]},
    {"success": [{"op": "put", "key": "a", "value": 1}, {"op": "delete", "key": "a"}]},
    {"failure": [{"op": "increment", "key": "a"}, {"op": "patch", "key": "a", "merge": {}}]},
]


@pytest.mark.parametrize("body", BAD_BODIES)
async def test_malformed_transactions_are_400_and_change_nothing(
    client: httpx.AsyncClient, body: Any
) -> None:
    start = await revision(client)
    r = await client.post("/v1/txn", json=body)
    assert r.status_code == 400, (body, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["code"] in ("invalid_request", "invalid_key", "invalid_ttl"), r.text
    assert await revision(client) == start


async def test_bodies_that_are_not_json_or_not_storable(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/txn", content=b"{nope")
    problem(r, 400, "invalid_request")
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    r = await client.post("/v1/txn", content=b'{"success":[{"op":"put","key":"a","value":'
                          + b"[" * 300 + b"]" * 300 + b"}]}")
    assert r.status_code in (400, 422), r.text
    assert (await client.get("/v1/kv/a")).status_code == 404


async def test_too_many_ops_and_two_writes_to_one_key(make_client: Any) -> None:
    async with make_client(max_txn_ops=3) as client:
        ops = [{"op": "put", "key": f"k{i}", "value": i} for i in range(4)]
        r = await client.post("/v1/txn", json={"success": ops})
        assert "CORKBOARD_MAX_TXN_OPS" in problem(r, 400, "invalid_request")["detail"]
        r = await client.post("/v1/txn", json={"compare": [{"key": "a", "exists": False}] * 4})
        problem(r, 400, "invalid_request")
        assert (await txn(client, {"success": ops[:3], "failure": ops[:3]}))["succeeded"]
        r = await client.post("/v1/txn", json={"success": [
            {"op": "put", "key": "a", "value": 1}, {"op": "increment", "key": "a"}]})
        assert "twice" in problem(r, 400, "invalid_request")["detail"]
        # A get does not count as a write.
        out = await txn(client, {"success": [{"op": "put", "key": "a", "value": 1},
                                             {"op": "get", "key": "a"}]})
        assert out["results"][1]["value"] == 1
        assert (await client.get("/v1/kv/k3")).status_code == 404


async def test_the_log_filters_transactions_per_watcher(client: httpx.AsyncClient) -> None:
    # Live streams filter the same way: tests/test_txn_processes.py.
    start = await revision(client)
    await put(client, "agents/gone", 0)
    await txn(client, {"success": [
        {"op": "put", "key": "agents/a1", "value": 1},
        {"op": "put", "key": "config", "value": 2},
        {"op": "delete", "key": "agents/gone"},
    ]})
    await put(client, "other/x", 3)
    agents = await events(client, since=start, pattern="agents/*")
    assert [e["type"] for e in agents] == ["kv.put", "txn"]
    assert [c["key"] for c in agents[1]["changes"]] == ["agents/a1", "agents/gone"]
    assert [e["key"] for e in await events(client, since=start, pattern="other/*")] == ["other/x"]
    deletes = await events(client, since=start, types="kv.delete")
    assert [e["changes"] for e in deletes] == [
        [{"type": "kv.delete", "key": "agents/gone", "value": None, "old_value": 0}]]
    assert len((await events(client, since=start, types="txn"))[0]["changes"]) == 3
    assert await events(client, since=start, types="lock") == []


async def test_delete_by_pattern_is_one_revision_and_one_event(
    client: httpx.AsyncClient, backend: str,
) -> None:
    for key in ("agents/a", "agents/b/c", "agentsx", "other"):
        await put(client, key, key)
    start = await revision(client)
    r = await client.delete("/v1/kv", params={"pattern": "agents/*"})
    assert r.status_code == 200, r.text
    rev = next_revision(backend, start, r.json()["revision"])
    assert r.json() == {"deleted": 2, "keys": ["agents/a", "agents/b/c"], "revision": rev}
    found = await events(client, since=start)
    assert len(found) == 1 and found[0]["type"] == "txn"
    assert [(c["type"], c["key"], c["old_value"]) for c in found[0]["changes"]] == [
        ("kv.delete", "agents/a", "agents/a"), ("kv.delete", "agents/b/c", "agents/b/c")]
    r = await client.delete("/v1/kv", params={"pattern": "agents/*"})
    assert r.json() == {"deleted": 0, "keys": [], "revision": rev}
    r = await client.delete("/v1/kv", params={"pattern": "other"})
    assert r.json()["keys"] == ["other"]
    problem(await client.delete("/v1/kv"), 400, "invalid_request")
    problem(await client.delete("/v1/kv", params={"pattern": ""}), 400, "invalid_pattern")


async def test_delete_by_pattern_refuses_more_than_ten_thousand_keys(
    client: httpx.AsyncClient,
) -> None:
    for start in range(0, 10_001, 128):
        ops = [{"op": "put", "key": f"many/{i:05d}", "value": i}
               for i in range(start, min(start + 128, 10_001))]
        await txn(client, {"success": ops})
    before = await revision(client)
    r = await client.delete("/v1/kv", params={"pattern": "many/*"})
    problem(r, 409, "too_many_keys")
    assert await revision(client) == before
    assert (await client.get("/v1/kv/many/00000")).status_code == 200
    await client.delete("/v1/kv/many/00000")
    r = await client.delete("/v1/kv", params={"pattern": "many/*"})
    assert r.status_code == 200 and r.json()["deleted"] == 10_000


async def test_delete_by_pattern_honours_fences(client: httpx.AsyncClient) -> None:
    await put(client, "p/a", 1)
    r = await client.delete("/v1/kv", params={"pattern": "p/*"},
                            headers={"Fence-Lock": "l", "Fence-Token": "1"})
    problem(r, 409, "stale_fence")
    assert (await client.get("/v1/kv/p/a")).status_code == 200


async def test_quota_reached_inside_a_transaction(make_client: Any) -> None:
    async with make_client(namespace_max_keys=3, namespace_max_bytes=1024) as client:
        await put(client, "a", 1)
        await put(client, "b", 2)
        start = await revision(client)
        r = await client.post("/v1/txn", json={"success": [
            {"op": "put", "key": "a", "value": 10},
            {"op": "put", "key": "c", "value": 3},
            {"op": "put", "key": "d", "value": 4},
        ]})
        problem(r, 507, "quota_exceeded")
        r = await client.post("/v1/txn", json={"success": [
            {"op": "put", "key": "c", "value": "x" * 1100}]})
        problem(r, 507, "quota_exceeded")
        assert await revision(client) == start
        assert (await client.get("/v1/kv/a")).json()["value"] == 1
        out = await txn(client, {"success": [{"op": "put", "key": "c", "value": 3}]})
        assert out["succeeded"] is True
        # Deleting by pattern gives the room back.
        await client.delete("/v1/kv", params={"pattern": "*"})
        await txn(client, {"success": [{"op": "put", "key": k, "value": "y" * 200}
                                       for k in ("x", "y", "z")]})


async def test_deletes_in_a_transaction_make_no_room_for_its_puts(make_client: Any) -> None:
    """The quota check of a transaction counts its puts as if its deletes were not
    there, on every engine; what it frees is counted after."""
    async with make_client(namespace_max_keys=2) as client:
        await put(client, "a", 1)
        await put(client, "b", 2)
        start = await revision(client)
        r = await client.post("/v1/txn", json={"success": [
            {"op": "delete", "key": "a"}, {"op": "put", "key": "c", "value": 3}]})
        problem(r, 507, "quota_exceeded")
        assert await revision(client) == start
        assert (await client.get("/v1/kv/a")).status_code == 200
        await txn(client, {"success": [{"op": "delete", "key": "a"},
                                       {"op": "put", "key": "b", "value": 4}]})
        await put(client, "c", 3)  # the delete's room, once it is done
        problem(await client.put("/v1/kv/d", json=5), 507, "quota_exceeded")
