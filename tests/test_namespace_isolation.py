"""One namespace per call (API.md section 9), generated from the OpenAPI document: for
every /v1 operation, a token granted only namespace A aims the call at namespace B by every
trick of the query string; each is refused and B is unchanged. A route added later is
covered without editing this file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx

from app.main import create_app
from app.settings import Settings
from tests.helpers import problem

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]

A, B = "team-a", "team-b"
TOKEN_A = "team-a-token-0123456789"
ADMIN = "admin-token-012345678901"
TOKENS = json.dumps([
    {"token": TOKEN_A, "namespaces": [A], "permissions": ["read", "write", "admin"]},
    {"token": ADMIN, "namespaces": ["*"], "permissions": ["read", "write", "admin"]},
])
#: Path parameters by name; any other gets "x".
PATH_VALUES = {"key": "k", "name": "l", "sid": "s", "var": "v", "thread": "t", "channel": "c"}
#: The query strings that aim a call at B (raw bytes: encodings are the point) and the
#: refusal each gets: 403 when the access layer resolves B, 400 for a repeated parameter.
TRICKS: list[tuple[bytes, int]] = [
    (b"ns=team-b", 403),
    (b"ns=team-a&ns=team-b", 400),
    (b"ns=team-b&ns=team-a", 400),
    (b"%6Es=team-b", 403),
    (b"n%73=team-b", 403),
    (b"ns=team-a&n%73=team-b", 400),
    (b"%6E%73=team-b&ns=team-a", 400),
    (b"ns=team-%62", 403),
    (b"ns=%74%65%61%6D%2D%62", 403),
    (b"ns=team-a&ns=", 400),
    (b"ns=team-b&revision=1&revision=2", 400),
]
STREAMS = frozenset({"/v1/watch"})


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path with parameters filled, operation) of every namespaced /v1 call."""
    spec = create_app(Settings()).openapi()
    found = []
    for template, item in spec["paths"].items():
        if not template.startswith("/v1") or template == "/v1/capabilities":
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: PATH_VALUES.get(m.group(1), "x"), template)
        for method, op in item.items():
            found.append((method.upper(), path, op))
    return found


def request_body(method: str, path: str, op: dict[str, Any]) -> dict[str, Any]:
    """A small body of the first media type the operation documents."""
    if "requestBody" not in op:
        return {}
    media = next(iter(op["requestBody"]["content"]))
    if media == "*/*":
        return {"content": b"bytes", "headers": {"content-type": "text/plain"}}
    if media == "application/json-patch+json":
        return {"content": b"[]", "headers": {"content-type": media}}
    body = b"{}" if path != "/v1/kv/k" else b'"x"'
    return {"content": body, "headers": {"content-type": media}}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def state_of(c: httpx.AsyncClient, ns: str) -> tuple[int, Any, Any]:
    """What an admin sees of a namespace: its revision (every write moves it), its keys
    with values, its locks."""
    events = (await c.get("/v1/events", params={"ns": ns}, headers=bearer(ADMIN))).json()
    keys = (await c.get("/v1/kv", params={"ns": ns}, headers=bearer(ADMIN))).json()["items"]
    locks = (await c.get("/v1/locks", params={"ns": ns}, headers=bearer(ADMIN))).json()
    return events["revision"], keys, locks


async def seed(c: httpx.AsyncClient, ns: str) -> None:
    h = bearer(ADMIN)
    assert (await c.put("/v1/kv/k", params={"ns": ns}, json={"v": 1}, headers=h)).is_success
    assert (await c.put("/v1/sessions/s", params={"ns": ns}, json={}, headers=h)).is_success
    r = await c.post("/v1/locks/l", params={"ns": ns}, json={"owner": "o", "ttl": 60}, headers=h)
    assert r.is_success


async def call(
    c: httpx.AsyncClient, method: str, path: str, query: bytes, token: str | None,
    body: dict[str, Any],
) -> httpx.Response:
    headers = {**body.get("headers", {}), **(bearer(token) if token else {})}
    url = httpx.URL(path, query=query)
    if path in STREAMS:
        async with c.stream(method, url, headers=headers) as r:
            return r  # refused calls answer at once; a stream is closed unread
    return await c.request(method, url, headers=headers, content=body.get("content"))


async def test_no_trick_reaches_another_namespace(make_client: ClientFactory) -> None:
    ops = operations()
    assert len(ops) >= 50, f"only {len(ops)} operations found: the test would test little"
    async with make_client(tokens=TOKENS) as c:
        await seed(c, B)
        before = await state_of(c, B)
        for method, path, op in ops:
            body = request_body(method, path, op)
            for query, status in TRICKS:
                r = await call(c, method, path, query, TOKEN_A, body)
                assert r.status_code == status, (method, path, query, r.status_code)
            if path in STREAMS:
                continue
            # The same call aimed at A is not refused by access control (the control:
            # the refusals above are the namespace's, not the call's).
            r = await call(c, method, path, b"ns=team-a", TOKEN_A, body)
            assert r.status_code not in (401, 403), (method, path, r.status_code, r.text)
        assert await state_of(c, B) == before


async def test_query_tokens_reach_no_other_namespace(make_client: ClientFactory) -> None:
    """access_token works only on GET /v1/watch and /v1/events, once, however encoded."""
    async with make_client(tokens=TOKENS) as c:
        await seed(c, B)
        before = await state_of(c, B)
        a, admin = TOKEN_A.encode(), ADMIN.encode()
        for path in ("/v1/events", "/v1/watch"):
            cases: list[tuple[bytes, int]] = [
                (b"ns=team-b&access_token=" + a, 403),
                (b"ns=team-b&access%5Ftoken=" + a, 403),
                (b"ns=team-b&access%5ftoken=" + a, 403),
                (b"ns=team-b&%61ccess_token=" + a, 403),
                (b"ns=team-b&access_token=" + a + b"&access_token=" + admin, 400),
                (b"ns=team-b&access_token=" + admin + b"&access%5Ftoken=" + a, 400),
                (b"ns=team-a&ns=team-b&access_token=" + a, 400),
            ]
            for query, status in cases:
                r = await call(c, "GET", path, query, None, {})
                assert r.status_code == status, (path, query, r.status_code)
            # A header wins over a query token: the admin token in the query does not
            # lift the A-only header token to B.
            r = await call(c, "GET", path, b"ns=team-b&access_token=" + admin, TOKEN_A, {})
            assert r.status_code == 403
        # Elsewhere a query token is no token at all.
        for method, path in (("GET", "/v1/kv/k"), ("PUT", "/v1/kv/k")):
            r = await call(c, method, path, b"ns=team-b&access_token=" + admin, None,
                           {"content": b"1", "headers": {"content-type": "application/json"}})
            problem(r, 401, "unauthorized")
        assert await state_of(c, B) == before


async def test_repeated_parameters_are_refused_without_tokens(client: httpx.AsyncClient) -> None:
    """The access layer runs with no tokens configured too: the namespace is resolved
    once, and a repeated parameter names itself."""
    await client.put("/v1/kv/k", params={"ns": B}, json=1)
    body = problem(await client.put(httpx.URL("/v1/kv/k", query=b"ns=team-a&ns=team-b"),
                                    json=2), 400, "invalid_request")
    assert "'ns'" in body["detail"] and body["errors"][0]["location"] == ["query", "ns"]
    body = problem(await client.get(httpx.URL("/v1/kv/k", query=b"ns=team-b&n%73=team-b")),
                   400, "invalid_request")
    assert "'ns'" in body["detail"]
    body = problem(await client.get(httpx.URL("/v1/kv", query=b"limit=1&limit=2")),
                   400, "invalid_request")
    assert "'limit'" in body["detail"]
    r = await client.get("/v1/kv/k", params={"ns": B})
    assert r.json()["value"] == 1
    assert (await client.get("/v1/kv/k", params={"ns": A})).status_code == 404
