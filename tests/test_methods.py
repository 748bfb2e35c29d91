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


def expected_allow(path: str) -> set[str]:
    """The methods of every documented path template that matches ``path``."""
    allowed = {
        method.upper()
        for template, item in SPEC["paths"].items()
        if template_regex(template).fullmatch(path)
        for method in item
    }
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
        for method in METHODS:
            if method in allow:
                continue
            r = await client.request(method, path)
            problem(r, 405, "method_not_allowed")
            assert set(r.headers["allow"].split(", ")) == allow, (method, path, r.headers)
            checked += 1
    assert checked > 50


async def test_the_reported_case_post_on_a_key(client: httpx.AsyncClient) -> None:
    r = await client.post("/v1/kv/x")
    problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "DELETE, GET, HEAD, PATCH, PUT"


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
