"""The keys API (API.md section 2) through HTTP, on every backend."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.helpers import ISO_MS, events, problem, revision


async def test_put_creates_then_replaces(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/kv/agents/a1/status", json={"state": "idle"})
    assert r.status_code == 201
    first = r.json()
    assert first["key"] == "agents/a1/status"
    assert first["value"] == {"state": "idle"}
    assert first["version"] == 1
    assert first["created_revision"] == first["revision"]
    assert ISO_MS.fullmatch(first["created_at"]) and ISO_MS.fullmatch(first["modified_at"])
    assert first["expires_at"] is None
    assert r.headers["etag"] == f'"{first["revision"]}"'

    r = await client.put("/v1/kv/agents/a1/status", json={"state": "busy"})
    assert r.status_code == 200
    second = r.json()
    assert second["version"] == 2
    assert second["revision"] > first["revision"]
    assert second["created_revision"] == first["revision"]
    assert second["created_at"] == first["created_at"]

    r = await client.get("/v1/kv/agents/a1/status")
    assert r.status_code == 200
    assert r.json() == second
    assert r.headers["etag"] == f'"{second["revision"]}"'


@pytest.mark.parametrize(
    "value", [None, True, 0, -1.5, "text", [], {}, [1, {"a": [None]}], {"nested": {"x": "ü"}}]
)
async def test_any_json_value_round_trips(client: httpx.AsyncClient, value: object) -> None:
    r = await client.put("/v1/kv/v", content=json.dumps(value),
                         headers={"content-type": "application/json"})
    assert r.status_code == 201
    assert (await client.get("/v1/kv/v")).json()["value"] == value


async def test_text_plain_is_stored_as_a_string(client: httpx.AsyncClient) -> None:
    text = {"content-type": "text/plain"}
    r = await client.put("/v1/kv/greeting", content=b"hello", headers=text)
    assert r.status_code == 201
    assert r.json()["value"] == "hello"
    r = await client.put(
        "/v1/kv/greeting", content=b"{not json",
        headers={"content-type": "text/plain; charset=utf-8"},
    )
    assert r.json()["value"] == "{not json"


async def test_json_media_types(client: httpx.AsyncClient) -> None:
    for i, ct in enumerate(["application/json", "application/vnd.x+json", None]):
        headers = {"content-type": ct} if ct else {}
        r = await client.put(f"/v1/kv/m{i}", content=b' {"a" : 1} ', headers=headers)
        assert r.status_code == 201, (ct, r.text)
        assert r.json()["value"] == {"a": 1}


async def test_get_missing_is_404(client: httpx.AsyncClient) -> None:
    body = problem(await client.get("/v1/kv/nope"), 404, "not_found")
    assert "nope" in body["detail"]


async def test_get_at_revision(client: httpx.AsyncClient) -> None:
    r1 = (await client.put("/v1/kv/k", json=1)).json()["revision"]
    await client.put("/v1/kv/other", json=0)
    r2 = (await client.put("/v1/kv/k", json=2)).json()["revision"]
    assert (await client.get("/v1/kv/k", params={"revision": r1})).json()["value"] == 1
    # between two writes, the older value was current
    assert (await client.get("/v1/kv/k", params={"revision": r2 - 1})).json()["value"] == 1
    assert (await client.get("/v1/kv/k", params={"revision": r2})).json()["value"] == 2
    assert (await client.get("/v1/kv/k", params={"revision": r2 + 100})).json()["value"] == 2
    problem(await client.get("/v1/kv/k", params={"revision": r1 - 1}), 404, "not_found")
    problem(await client.get("/v1/kv/k", params={"revision": "x"}), 400, "invalid_request")


async def test_revision_older_than_history_is_404(make_client: object) -> None:
    async with make_client(key_history=2) as client:  # type: ignore[operator]
        revs = [(await client.put("/v1/kv/k", json=i)).json()["revision"] for i in range(4)]
        assert (await client.get("/v1/kv/k", params={"revision": revs[2]})).json()["value"] == 2
        problem(await client.get("/v1/kv/k", params={"revision": revs[1]}), 404, "not_found")


async def test_if_none_match_on_get_is_304(client: httpx.AsyncClient) -> None:
    etag = (await client.put("/v1/kv/k", json=1)).headers["etag"]
    r = await client.get("/v1/kv/k", headers={"if-none-match": etag})
    assert r.status_code == 304
    assert r.headers["etag"] == etag
    assert (await client.get("/v1/kv/k", headers={"if-none-match": '"1234"'})).status_code == 200


async def test_if_match_compare_and_swap(client: httpx.AsyncClient) -> None:
    etag = (await client.put("/v1/kv/k", json=1)).headers["etag"]
    r = await client.put("/v1/kv/k", json=2, headers={"if-match": etag})
    assert r.status_code == 200
    new = r.json()
    body = problem(await client.put("/v1/kv/k", json=3, headers={"if-match": etag}), 412,
                   "revision_mismatch")
    assert body["current"] == new
    assert (await client.get("/v1/kv/k")).json()["value"] == 2
    # unquoted and weak forms are accepted too
    assert (await client.put("/v1/kv/k", json=4,
                             headers={"if-match": str(new["revision"])})).status_code == 200
    # If-Match: * needs the key to exist
    assert (await client.put("/v1/kv/k", json=5, headers={"if-match": "*"})).status_code == 200
    body = problem(await client.put("/v1/kv/absent", json=1, headers={"if-match": "*"}), 412,
                   "revision_mismatch")
    assert body["current"] is None
    body = problem(await client.put("/v1/kv/absent", json=1, headers={"if-match": '"3"'}), 412,
                   "revision_mismatch")
    assert body["current"] is None
    problem(await client.get("/v1/kv/absent"), 404, "not_found")


async def test_if_none_match_star_creates_only(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/kv/k", json=1, headers={"if-none-match": "*"})
    assert r.status_code == 201
    body = problem(await client.put("/v1/kv/k", json=2, headers={"if-none-match": "*"}), 412,
                   "already_exists")
    assert body["current"]["value"] == 1


async def test_bad_conditional_headers(client: httpx.AsyncClient) -> None:
    before = await revision(client)
    problem(await client.put("/v1/kv/k", json=1, headers={"if-match": "abc"}), 400,
            "invalid_request")
    problem(await client.put("/v1/kv/k", json=1, headers={"if-none-match": '"3"'}), 400,
            "invalid_request")
    problem(await client.put("/v1/kv/k", json=1, headers={"if-none-match": "*", "if-match": "*"}),
            400, "invalid_request")
    assert await revision(client) == before


async def test_ttl_on_put(client: httpx.AsyncClient) -> None:
    for ttl in ["30", "0.5", "250ms", "5m", "1h", "1h30m"]:
        r = await client.put("/v1/kv/t", json=1, params={"ttl": ttl})
        assert r.status_code in (200, 201), (ttl, r.text)
        assert ISO_MS.fullmatch(r.json()["expires_at"])
    r = await client.put("/v1/kv/t", json=1, params={"ttl": "0"})
    assert r.json()["expires_at"] is None
    r = await client.put("/v1/kv/t", json=1)
    assert r.json()["expires_at"] is None


async def test_merge_patch(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/cfg", json={"a": 1, "b": {"c": 2, "d": 3}, "e": [1]})
    r = await client.patch(
        "/v1/kv/cfg",
        content=b'{"b": {"c": null, "x": 9}, "e": null, "f": "new"}',
        headers={"content-type": "application/merge-patch+json"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["value"] == {"a": 1, "b": {"d": 3, "x": 9}, "f": "new"}
    assert r.json()["version"] == 2


async def test_json_patch_all_operations(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/doc", json={"list": [1, 2, 3], "obj": {"k": "v"}, "n": 1})
    ops = [
        {"op": "test", "path": "/n", "value": 1},
        {"op": "add", "path": "/list/-", "value": 4},
        {"op": "add", "path": "/list/0", "value": 0},
        {"op": "remove", "path": "/list/1"},
        {"op": "replace", "path": "/obj/k", "value": "w"},
        {"op": "copy", "from": "/obj", "path": "/copy"},
        {"op": "move", "from": "/n", "path": "/m"},
        {"op": "add", "path": "/a~1b", "value": True},
    ]
    r = await client.patch("/v1/kv/doc", json=ops,
                           headers={"content-type": "application/json-patch+json"})
    assert r.status_code == 200, r.text
    assert r.json()["value"] == {
        "list": [0, 2, 3, 4], "obj": {"k": "w"}, "copy": {"k": "w"}, "m": 1, "a/b": True,
    }


async def test_json_patch_failed_test_is_412_and_changes_nothing(
    client: httpx.AsyncClient,
) -> None:
    stored = (await client.put("/v1/kv/doc", json={"n": 1})).json()
    before = await revision(client)
    ops = [{"op": "replace", "path": "/n", "value": 5}, {"op": "test", "path": "/n", "value": 1}]
    body = problem(
        await client.patch("/v1/kv/doc", json=ops,
                           headers={"content-type": "application/json-patch+json"}),
        412, "revision_mismatch",
    )
    assert body["current"] == stored
    # true is not 1 in JSON
    ops = [{"op": "test", "path": "/n", "value": True}]
    problem(await client.patch("/v1/kv/doc", json=ops,
                               headers={"content-type": "application/json-patch+json"}),
            412, "revision_mismatch")
    assert await revision(client) == before
    assert (await client.get("/v1/kv/doc")).json() == stored


@pytest.mark.parametrize(
    ("ops", "status", "code"),
    [
        ([{"op": "remove", "path": "/missing"}], 422, "validation_failed"),
        ([{"op": "replace", "path": "/list/9", "value": 1}], 422, "validation_failed"),
        ([{"op": "add", "path": "/x/y", "value": 1}], 422, "validation_failed"),
        ([{"op": "move", "from": "/obj", "path": "/obj/inner"}], 422, "validation_failed"),
        ([{"op": "frobnicate", "path": "/n"}], 400, "invalid_request"),
        ([{"op": "add", "path": "no-slash", "value": 1}], 400, "invalid_request"),
        ([{"op": "add", "path": "/n"}], 400, "invalid_request"),
        ({"op": "add"}, 400, "invalid_request"),
        (["not an object"], 400, "invalid_request"),
    ],
)
async def test_json_patch_that_does_not_apply_changes_nothing(
    client: httpx.AsyncClient, ops: object, status: int, code: str
) -> None:
    stored = (await client.put("/v1/kv/doc", json={"n": 1, "list": [1], "obj": {}})).json()
    before = await revision(client)
    r = await client.patch("/v1/kv/doc", json=ops,
                           headers={"content-type": "application/json-patch+json"})
    problem(r, status, code)
    assert await revision(client) == before
    assert (await client.get("/v1/kv/doc")).json() == stored


async def test_patch_missing_key(client: httpx.AsyncClient) -> None:
    mp = {"content-type": "application/merge-patch+json"}
    problem(await client.patch("/v1/kv/new", content=b'{"a":1}', headers=mp), 404, "not_found")
    r = await client.patch("/v1/kv/new", content=b'{"a":1}', headers=mp,
                           params={"initial": '{"b": 2}'})
    assert r.status_code == 201
    assert r.json()["value"] == {"a": 1, "b": 2}
    problem(await client.patch("/v1/kv/new2", content=b'{"a":1}', headers=mp,
                               params={"initial": "{bad"}), 400, "invalid_request")


async def test_patch_errors(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/doc", json={"n": 1})
    before = await revision(client)
    problem(await client.patch("/v1/kv/doc", json={"n": 2}), 415, "unsupported_media_type")
    problem(await client.patch("/v1/kv/doc", content=b"{oops",
                               headers={"content-type": "application/merge-patch+json"}),
            400, "invalid_request")
    problem(await client.patch("/v1/kv/doc", content=b'{"n":2}',
                               headers={"content-type": "application/merge-patch+json",
                                        "if-match": '"999999"'}),
            412, "revision_mismatch")
    assert await revision(client) == before


async def test_patch_keeps_or_sets_expiry(client: httpx.AsyncClient) -> None:
    mp = {"content-type": "application/merge-patch+json"}
    e = (await client.put("/v1/kv/doc", json={}, params={"ttl": "1h"})).json()["expires_at"]
    r = await client.patch("/v1/kv/doc", content=b'{"a":1}', headers=mp)
    assert r.json()["expires_at"] == e
    r = await client.patch("/v1/kv/doc", content=b'{"a":2}', headers=mp, params={"ttl": "0"})
    assert r.json()["expires_at"] is None


async def test_increment(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/kv/hits/increment", json={})
    assert r.status_code == 201
    assert r.json()["value"] == 1
    r = await client.post("/v1/kv/hits/increment", json={"by": 41})
    assert r.status_code == 200
    assert r.json()["value"] == 42
    assert r.json()["version"] == 2
    r = await client.post("/v1/kv/hits/increment", json={"by": -50})
    assert r.json()["value"] == -8
    r = await client.post("/v1/kv/f/increment", json={"by": 0.25, "initial": 1})
    assert r.json()["value"] == 1.25
    r = await client.post("/v1/kv/f/increment", json={"by": 1})
    assert r.json()["value"] == 2.25
    r = await client.post("/v1/kv/nobody/increment")  # no body at all: by 1
    assert r.json()["value"] == 1


async def test_increment_with_ttl_on_creation_only(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/kv/rate/increment", json={"ttl": "1h"})
    expires = r.json()["expires_at"]
    assert expires is not None
    r = await client.post("/v1/kv/rate/increment", json={"ttl": "5s"})
    assert r.json()["expires_at"] == expires


async def test_increment_errors_change_nothing(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/s", json="text")
    await client.put("/v1/kv/big", json=2**53)
    before = await revision(client)
    body = problem(await client.post("/v1/kv/s/increment", json={"by": 1}), 422,
                   "validation_failed")
    assert "string" in body["detail"]
    problem(await client.post("/v1/kv/big/increment", json={"by": 1}), 422, "validation_failed")
    problem(await client.post("/v1/kv/big/increment", json={"by": -1}), 422, "validation_failed")
    problem(await client.post("/v1/kv/n/increment", json={"initial": 2**53 - 1}), 422,
            "validation_failed")
    problem(await client.post("/v1/kv/n/increment", json={"by": "1"}), 422, "validation_failed")
    problem(await client.post("/v1/kv/n/increment", json={"by": True}), 422, "validation_failed")
    problem(await client.post("/v1/kv/n/increment", json={"by": 1, "extra": 1}), 422,
            "validation_failed")
    problem(await client.post("/v1/kv/n/increment", json={"ttl": "-1"}), 400, "invalid_ttl")
    problem(await client.post("/v1/kv/n/increment", content=b"{",
                              headers={"content-type": "application/json"}),
            400, "invalid_request")
    assert await revision(client) == before
    problem(await client.get("/v1/kv/n"), 404, "not_found")


async def test_touch(client: httpx.AsyncClient) -> None:
    put = (await client.put("/v1/kv/k", json=1, params={"ttl": "10s"})).json()
    r = await client.post("/v1/kv/k/touch", json={"ttl": "1h"})
    assert r.status_code == 200
    touched = r.json()
    assert touched["expires_at"] > put["expires_at"]
    assert touched["revision"] == put["revision"]
    assert touched["value"] == 1
    assert (await client.get("/v1/kv/k")).json()["expires_at"] == touched["expires_at"]
    r = await client.post("/v1/kv/k/touch", json={"ttl": 0})
    assert r.json()["expires_at"] is None
    problem(await client.post("/v1/kv/missing/touch", json={"ttl": 5}), 404, "not_found")
    problem(await client.post("/v1/kv/k/touch", json={"ttl": "soon"}), 400, "invalid_ttl")
    problem(await client.post("/v1/kv/k/touch", json={}), 422, "validation_failed")


async def test_delete(client: httpx.AsyncClient) -> None:
    etag = (await client.put("/v1/kv/k", json=1)).headers["etag"]
    problem(await client.delete("/v1/kv/k", headers={"if-match": '"99999"'}), 412,
            "revision_mismatch")
    assert (await client.get("/v1/kv/k")).status_code == 200
    r = await client.delete("/v1/kv/k", headers={"if-match": etag})
    assert r.status_code == 204
    assert r.content == b""
    problem(await client.get("/v1/kv/k"), 404, "not_found")
    assert (await client.delete("/v1/kv/k")).status_code == 204
    assert (await client.delete("/v1/kv/never")).status_code == 204


async def test_recreated_key_starts_fresh(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/k", json=1)
    await client.put("/v1/kv/k", json=2)
    await client.delete("/v1/kv/k")
    r = (await client.put("/v1/kv/k", json=3)).json()
    assert r["version"] == 1
    assert r["created_revision"] == r["revision"]
    history = (await client.get("/v1/kv/k/history")).json()["items"]
    assert [h["value"] for h in history] == [3]


async def test_history(make_client: object) -> None:
    async with make_client(key_history=3) as client:  # type: ignore[operator]
        revs = [(await client.put("/v1/kv/a/b", json=i)).json()["revision"] for i in range(5)]
        r = await client.get("/v1/kv/a/b/history")
        assert r.status_code == 200
        items = r.json()["items"]
        assert [i["value"] for i in items] == [4, 3, 2]
        assert [i["revision"] for i in items] == revs[:1:-1]
        assert [i["version"] for i in items] == [5, 4, 3]
        problem(await client.get("/v1/kv/none/history"), 404, "not_found")


async def test_action_words_are_not_keys(client: httpx.AsyncClient) -> None:
    for key in ["history", "a/history", "x/touch", "increment"]:
        problem(await client.put(f"/v1/kv/{key}", json=1), 400, "invalid_key")
    # 'historyx' and 'history/x' are ordinary keys
    assert (await client.put("/v1/kv/historyx", json=1)).status_code == 201
    assert (await client.put("/v1/kv/history/x", json=1)).status_code == 201
    assert (await client.get("/v1/kv/history/x")).json()["value"] == 1


async def test_namespaces_are_isolated(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/k", json="a", params={"ns": "team-a"})
    await client.put("/v1/kv/k", json="b", params={"ns": "team_b"})
    assert (await client.get("/v1/kv/k", params={"ns": "team-a"})).json()["value"] == "a"
    assert (await client.get("/v1/kv/k", params={"ns": "team_b"})).json()["value"] == "b"
    problem(await client.get("/v1/kv/k"), 404, "not_found")
    # each namespace has its own revision counter
    assert (await client.get("/v1/kv/k", params={"ns": "team-a"})).json()["revision"] == 1
    for bad in ["Team", "-a", "", "a" * 64, "a.b"]:
        problem(await client.get("/v1/kv/k", params={"ns": bad}), 400, "invalid_request")


async def test_events_for_every_key_change(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/k", json=1)
    await client.put("/v1/kv/k", json={"a": 1})
    await client.patch("/v1/kv/k", content=b'{"b":2}',
                       headers={"content-type": "application/merge-patch+json"})
    await client.post("/v1/kv/c/increment", json={"by": 2})
    await client.post("/v1/kv/k/touch", json={"ttl": "1h"})  # no revision, no event
    await client.delete("/v1/kv/k")
    await client.delete("/v1/kv/k")  # nothing to delete, no event
    got = await events(client)
    assert [(e["type"], e["key"], e["value"], e["old_value"]) for e in got] == [
        ("kv.put", "k", 1, None),
        ("kv.put", "k", {"a": 1}, 1),
        ("kv.put", "k", {"a": 1, "b": 2}, {"a": 1}),
        ("kv.put", "c", 2, None),
        ("kv.delete", "k", None, {"a": 1, "b": 2}),
    ]
    assert [e["revision"] for e in got] == [1, 2, 3, 4, 5]
    assert all(e["ns"] == "default" and ISO_MS.fullmatch(e["at"]) for e in got)


async def test_stale_fence_changes_nothing(client: httpx.AsyncClient) -> None:
    await client.put("/v1/kv/k", json=1)
    before = await revision(client)
    fence = {"fence-lock": "writer", "fence-token": "7"}
    problem(await client.put("/v1/kv/k", json=2, headers=fence), 409, "stale_fence")
    problem(await client.put("/v1/kv/new", json=2, headers=fence), 409, "stale_fence")
    problem(await client.delete("/v1/kv/k", headers=fence), 409, "stale_fence")
    problem(await client.post("/v1/kv/k/increment", json={}, headers=fence), 409, "stale_fence")
    problem(await client.post("/v1/kv/k/touch", json={"ttl": 5}, headers=fence), 409,
            "stale_fence")
    problem(await client.patch("/v1/kv/k", content=b"{}", headers={
        **fence, "content-type": "application/merge-patch+json"}), 409, "stale_fence")
    problem(await client.put("/v1/kv/k", json=2, headers={"fence-lock": "writer"}), 400,
            "invalid_request")
    problem(await client.put("/v1/kv/k", json=2, headers={"fence-token": "3"}), 400,
            "invalid_request")
    problem(await client.put("/v1/kv/k", json=2, headers={**fence, "fence-token": "x"}), 400,
            "invalid_request")
    problem(await client.put("/v1/kv/k", json=2, headers={**fence, "fence-lock": "a*"}), 400,
            "invalid_key")
    assert await revision(client) == before
    assert (await client.get("/v1/kv/k")).json()["value"] == 1
