"""HEAD wherever GET exists, and a 405's Allow naming every method of its path, checked
for every path of the generated OpenAPI document on both backends."""

from __future__ import annotations

import json
import re

import httpx

from tests.helpers import problem
from tests.support import ROOT

SPEC = json.loads((ROOT / "openapi" / "openapi.json").read_text())
METHODS = ("GET", "PUT", "POST", "PATCH", "DELETE")
#: Concrete values for path parameters; keys and lock names may hold '/'.
VALUES = {"key": "k", "name": "n", "sid": "s1", "var": "v", "thread": "t", "channel": "c",
          "lease_id": "l1"}
MULTI_SEGMENT = {"key", "name"}


def concrete(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: VALUES[m.group(1)], template)


def template_regex(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{\w+\})", template)
    regex = "".join(
        (".+" if p[1:-1] in MULTI_SEGMENT else "[^/]+") if p.startswith("{") else re.escape(p)
        for p in parts
    )
    return re.compile(regex)


def is_action(template: str) -> bool:
    """A template whose last segment is an action following a name (``/v1/kv/{key}/
    history``): the name templates match its paths too, but refuse them (400)."""
    parts = template.split("/")
    return not parts[-1].startswith("{") and parts[-2][1:-1] in MULTI_SEGMENT


def methods_of(templates: list[str]) -> set[str]:
    return {method.upper() for template in templates for method in SPEC["paths"][template]}


def matching(path: str) -> tuple[list[str], list[str]]:
    """The documented templates that match ``path``: an action's, and the others."""
    found = [t for t in SPEC["paths"] if template_regex(t).fullmatch(path)]
    return [t for t in found if is_action(t)], [t for t in found if not is_action(t)]


def name_methods(path: str) -> set[str]:
    """Of an action's path, the methods of the name templates that match it too: their
    calls are refused as calls on a name ending in an action segment (400)."""
    actions, others = matching(path)
    return methods_of(others) if actions else set()


def expected_allow(path: str) -> set[str]:
    """The methods of every documented path template that matches ``path``; of an
    action's path, of the action's templates only."""
    actions, others = matching(path)
    allowed = methods_of(actions or others)
    if "GET" in allowed:
        allowed.add("HEAD")
    return allowed


def get_paths() -> list[str]:
    return [t for t, item in SPEC["paths"].items() if "get" in item]


async def test_every_405_names_every_method_of_its_path(client: httpx.AsyncClient) -> None:
    checked = 0
    for template in SPEC["paths"]:
        path = concrete(template)
        allow = expected_allow(path)
        refused = name_methods(path)
        for method in METHODS:
            if method in allow:
                continue
            r = await client.request(method, path)
            if method in refused:
                problem(r, 400, "invalid_key")
                continue
            problem(r, 405, "method_not_allowed")
            assert set(r.headers["allow"].split(", ")) == allow, (method, path, r.headers)
            checked += 1
    assert checked > 50


async def test_the_reported_case_post_on_a_key(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/kv/x")
    problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "DELETE, GET, HEAD, PATCH, PUT"


async def test_an_actions_path_names_only_the_actions_methods(client: httpx.AsyncClient) -> None:
    """A name may not end in an action segment (PUT /v1/kv/k/history is 400 invalid_key),
    so a 405 on an action's path does not offer the name's methods (schemathesis'
    ST205 found the key's methods offered on /v1/kv/{key}/history)."""
    cases = {
        "/v1/kv/a/b/history": "GET, HEAD", "/v1/kv/k/increment": "POST",
        "/v1/kv/k/touch": "POST", "/v1/locks/a/b/release": "POST",
        "/v1/locks/n/refresh": "POST", "/v1/locks/n/force-release": "POST",
        "/v1/sessions/s1/locks/n/release": "POST",
    }
    for path, allow in cases.items():
        r = await client.options(path)
        problem(r, 405, "method_not_allowed")
        assert r.headers["allow"] == allow, (path, r.headers["allow"])
        assert r.json()["detail"] == f"OPTIONS is not allowed here; allowed: {allow}.", path
        # The name's methods, which the Allow no longer offers, are refused there.
        if allow == "POST":
            problem(await client.get(path), 400, "invalid_key")
    problem(await client.put("/v1/kv/k/history", json=1), 400, "invalid_key")
    # A name holding an action word elsewhere than at its end is a name like any other.
    r = await client.post("/v1/kv/history/k")
    problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "DELETE, GET, HEAD, PATCH, PUT"
    r = await client.put("/v1/locks/release/n")
    assert r.headers["allow"] == "GET, HEAD, POST"


async def _seed(client: httpx.AsyncClient) -> None:
    assert (await client.put("/v1/kv/k", json={"a": 1})).status_code == 201
    assert (await client.put("/v1/sessions/s1", json={"metadata": {}})).status_code == 201
    r = await client.post(
        "/v1/sessions/s1/variables", json={"name": "v", "type": "integer", "value": 1}
    )
    assert r.status_code == 201
    assert (await client.post("/v1/locks/n", json={"owner": "o"})).status_code == 200
    assert (await client.post("/v1/sessions/s1/locks/n", json={"owner": "o"})).status_code == 200
    await client.put("/v1/sessions/s1/subscriptions/t")
    await client.put("/v1/sessions/s1/threads/t/state", json={"x": 1})
    await client.put("/v1/sessions/s1/channels/c/state", json={"x": 1})
    await client.put("/v1/artifacts/k", content=b"bytes")
    assert (await client.post("/v1/leases", json={"ttl": "1h", "id": "l1"})).status_code == 201


async def test_head_answers_as_get_without_a_body(client: httpx.AsyncClient) -> None:
    await _seed(client)
    templates = [t for t in get_paths() if t != "/v1/watch"]
    assert len(templates) > 20
    for template in templates:
        path = concrete(template)
        got = await client.get(path)
        head = await client.head(path)
        assert got.status_code == 200, (path, got.text)
        assert head.status_code == got.status_code, (path, head.text)
        assert head.content == b""
        for name in ("content-type", "content-length", "etag"):
            if template != "/metrics" or name != "content-length":  # metrics move
                assert head.headers.get(name) == got.headers.get(name), (path, name)


async def test_head_of_missing_key_is_404_without_body(client: httpx.AsyncClient) -> None:
    r = await client.head("/v1/kv/missing")
    assert r.status_code == 404
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.content == b""


async def test_head_of_watch_answers_headers_at_once(client: httpx.AsyncClient) -> None:
    r = await client.head("/v1/watch", params={"pattern": "a*"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    assert r.content == b""
    problem(await client.get("/v1/watch", params={"pattern": ""}), 400, "invalid_pattern")
    bad = await client.head("/v1/watch", params={"pattern": ""})
    assert bad.status_code == 400 and bad.content == b""
