"""Listing held locks with paging (API.md section 4), namespace and session scoped, on
every backend: limit and cursor as the key listing, the scan budget, bad parameters."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from app.routers.common import encode_cursor
from tests.helpers import problem
from tests.locks_support import acquire, release, revision

MakeClient = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
SESSION = "/v1/sessions/s1/locks"


async def pages(client: httpx.AsyncClient, url: str = "/v1/locks",
                **params: Any) -> list[list[str]]:
    """The names of every page of a listing, following next_cursor to the end."""
    out: list[list[str]] = []
    cursor: str | None = None
    while True:
        r = await client.get(url, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"items", "next_cursor"}
        out.append([item["name"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            return out
        assert len(out) < 200, "paging does not end"


async def take(client: httpx.AsyncClient, url: str, name: str, owner: str = "o",
               **body: Any) -> dict[str, Any]:
    r = await client.post(f"{url}/{name}", json={"owner": owner, **body})
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def test_paging_returns_each_held_lock_once_in_name_order(
    client: httpx.AsyncClient,
) -> None:
    names = [f"jobs/{i:02d}" for i in range(23)]
    await asyncio.gather(*(acquire(client, n, "o-" + n) for n in reversed(names)))
    found = await pages(client, limit=4)
    assert [len(p) for p in found] == [4, 4, 4, 4, 4, 3]
    assert [n for p in found for n in p] == names
    first = (await client.get("/v1/locks", params={"limit": 1})).json()
    assert first["items"][0] == {
        **first["items"][0], "name": "jobs/00", "owner": "o-jobs/00", "pending_count": 0}
    assert await pages(client, limit=23) == [names]  # a full last page: no cursor
    r = (await client.get("/v1/locks")).json()  # the default limit: 100
    assert [i["name"] for i in r["items"]] == names and r["next_cursor"] is None


async def test_the_default_limit_is_100(client: httpx.AsyncClient) -> None:
    names = [f"l{i:03d}" for i in range(105)]
    for n in names:
        await acquire(client, n)
    body = (await client.get("/v1/locks")).json()
    assert [i["name"] for i in body["items"]] == names[:100]
    rest = (await client.get("/v1/locks", params={"cursor": body["next_cursor"]})).json()
    assert [i["name"] for i in rest["items"]] == names[100:] and rest["next_cursor"] is None


async def test_pattern_and_paging(client: httpx.AsyncClient) -> None:
    for name in ("a/1", "a/2", "a/3", "b/1", "a/4/x", "ab", "a/5"):
        await acquire(client, name)
    assert await pages(client, pattern="a/*", limit=2) == [
        ["a/1", "a/2"], ["a/3", "a/4/x"], ["a/5"]]
    assert await pages(client, pattern="*1", limit=1) == [["a/1"], ["b/1"]]
    assert await pages(client, pattern="a/*/x", limit=1) == [["a/4/x"]]
    assert await pages(client, pattern="ab", limit=1) == [["ab"]]  # exact: one call
    assert await pages(client, pattern="nothing*", limit=1) == [[]]


async def test_a_cursor_past_the_end_or_between_names(client: httpx.AsyncClient) -> None:
    for name in ("a", "b", "c"):
        await acquire(client, name)
    r = await client.get("/v1/locks", params={"cursor": encode_cursor("zzz")})
    assert r.status_code == 200 and r.json() == {"items": [], "next_cursor": None}
    r = await client.get("/v1/locks", params={"cursor": encode_cursor("a0")})
    assert [i["name"] for i in r.json()["items"]] == ["b", "c"]
    # a cursor whose lock was released since: the listing continues after its name
    body = (await client.get("/v1/locks", params={"limit": 1})).json()
    token = (await client.get("/v1/locks/a")).json()["token"]
    assert (await release(client, "a", "alice", token)).status_code == 200
    r = await client.get("/v1/locks", params={"cursor": body["next_cursor"]})
    assert [i["name"] for i in r.json()["items"]] == ["b", "c"]


async def test_expired_locks_are_skipped(client: httpx.AsyncClient) -> None:
    for i in range(6):
        await acquire(client, f"n{i}", ttl="50ms" if i % 2 else "30s")
    await asyncio.sleep(0.2)
    assert await pages(client, limit=2) == [["n0", "n2"], ["n4"]]
    assert await pages(client, pattern="n1") == [[]]


async def test_locks_held_throughout_are_listed_once_while_others_change(
    client: httpx.AsyncClient,
) -> None:
    stable = [f"s/{i:02d}" for i in range(30)]
    for name in stable:
        await acquire(client, name)
    seen: list[str] = []
    cursor: str | None = None
    for churn in range(100):
        params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
        body = (await client.get("/v1/locks", params=params)).json()
        seen += [i["name"] for i in body["items"]]
        for name in (f"s/00-new{churn}", f"s/99-new{churn}"):
            await acquire(client, name)
        token = (await client.get(f"/v1/locks/s/00-new{churn}")).json()["token"]
        await release(client, f"s/00-new{churn}", "alice", token)
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [n for n in seen if "-new" not in n] == stable
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("url", ["/v1/locks", SESSION])
@pytest.mark.parametrize(
    ("params", "code"),
    [({"limit": "0"}, "invalid_request"), ({"limit": "abc"}, "invalid_request"),
     ({"limit": "100000"}, "invalid_request"), ({"limit": "-1"}, "invalid_request"),
     ({"cursor": "!!!"}, "invalid_request"), ({"cursor": "Li4v"}, "invalid_request"),
     ({"pattern": "a b"}, "invalid_pattern"), ({"pattern": ""}, "invalid_pattern")],
)
async def test_bad_parameters_are_400_and_change_nothing(
    client: httpx.AsyncClient, url: str, params: dict[str, str], code: str
) -> None:
    await take(client, url, "held")
    before = await revision(client)
    problem(await client.get(url, params=params), 400, code)
    assert await revision(client) == before
    assert [i["name"] for i in (await client.get(url)).json()["items"]] == ["held"]


async def test_the_limit_is_at_most_max_list_limit(make_client: MakeClient) -> None:
    async with make_client(max_list_limit=5) as client:
        for name in "abcdefg":
            await acquire(client, name)
        problem(await client.get("/v1/locks", params={"limit": 6}), 400, "invalid_request")
        assert await pages(client, limit=5) == [list("abcde"), ["f", "g"]]
        # Without a limit, a maximum below the default page (100) is the page size: no
        # listing refuses the calls that name no limit.
        first = (await client.get("/v1/locks")).json()
        assert [i["name"] for i in first["items"]] == list("abcde") and first["next_cursor"]
        for i in range(7):
            await client.put(f"/v1/kv/k{i}", json=i)
        keys = await client.get("/v1/kv")
        assert keys.status_code == 200 and len(keys.json()["items"]) == 5


async def test_session_scoped_listing_pages(client: httpx.AsyncClient) -> None:
    names = [f"r{i}" for i in range(7)]
    for name in reversed(names):
        await take(client, SESSION, name)
    await take(client, "/v1/sessions/s2/locks", "r0")
    await acquire(client, "r9")  # a namespace lock: not the session's
    assert await pages(client, SESSION, limit=3) == [names[:3], names[3:6], names[6:]]
    assert await pages(client, SESSION, pattern="q*", limit=3) == [[]]
    assert await pages(client, SESSION, pattern="*6", limit=1) == [["r6"]]
    assert await pages(client, "/v1/sessions/s2/locks") == [["r0"]]
    assert await pages(client, "/v1/sessions/none/locks") == [[]]
    assert await pages(client, limit=5) == [["r9"]]


@pytest.mark.parametrize("url", ["/v1/locks", SESSION])
async def test_a_sparse_pattern_pages_on_past_the_scan_budget(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    from app.backends import paging

    monkeypatch.setattr(paging, "LIST_SCAN_BUDGET", 5)
    for i in range(23):
        await take(client, url, f"n{i:02d}")
    for name in ("z1x", "z2x", "z3x"):
        await take(client, url, name)
    found = await pages(client, url, pattern="*x", limit=2)
    # 5 names examined per call: 4 pages end early (empty, with a cursor), then the
    # matches, a full page cut by the budget, and the last one
    assert found == [[], [], [], [], ["z1x", "z2x"], ["z3x"]]
    assert [n for p in await pages(client, url, pattern="n*", limit=100) for n in p] == [
        f"n{i:02d}" for i in range(23)]
    r = await client.get(url, params={"pattern": "n05"})  # an exact pattern: one call
    assert [i["name"] for i in r.json()["items"]] == ["n05"]
    assert r.json()["next_cursor"] is None
