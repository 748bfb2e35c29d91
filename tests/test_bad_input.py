"""Bad input gets a clear problem+json error and changes nothing (API.md section 1)."""

from __future__ import annotations

import itertools
import json
import socket
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest

from tests.helpers import problem, revision
from tests.support import ServiceProcess, running

MERGE = {"content-type": "application/merge-patch+json"}
ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]

BAD_KEYS = {
    "empty": "",
    "513 bytes": "k" * 513,
    "star": "a*b",
    "control character": "a%00b",
    "newline": "a%0Ab",
    "non-UTF-8 byte": "a%FFb",
    "space": "a%20b",
    "empty segment": "a//b",
    "trailing slash": "a/",
    "quote": "a%22b",
    "backslash": "a%5Cb",
    "unicode": "caf%C3%A9",
}


@pytest.mark.parametrize("key", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
async def test_bad_keys_are_refused_everywhere(client: httpx.AsyncClient, key: str) -> None:
    before = await revision(client)
    calls: list[tuple[str, str, dict[str, object]]] = [
        ("PUT", f"/v1/kv/{key}", {"json": 1}),
        ("GET", f"/v1/kv/{key}", {}),
        ("DELETE", f"/v1/kv/{key}", {}),
        ("PATCH", f"/v1/kv/{key}", {"content": b"{}", "headers": MERGE}),
    ]
    if key:  # '/v1/kv//increment' is the empty key before an action word
        calls += [
            ("POST", f"/v1/kv/{key}/increment", {"json": {}}),
            ("POST", f"/v1/kv/{key}/touch", {"json": {"ttl": 1}}),
            ("GET", f"/v1/kv/{key}/history", {}),
        ]
    for method, path, kwargs in calls:
        problem(await send_raw(client, method, path, **kwargs), 400, "invalid_key")
    assert await revision(client) == before


DOT_DOT_PATHS = ["/v1/kv/a/../b", "/v1/kv/../etc/passwd", "/v1/kv/..", "/v1/kv/a/..",
                 "/v1/kv/a/%2e%2e/b", "/v1/kv/a/%2E%2E/b"]


def test_dot_dot_segments_over_the_wire(backend: str) -> None:
    """httpx resolves '..' before sending, so these go as raw bytes to a real server."""
    with running(ServiceProcess({"CORKBOARD_BACKEND": backend})) as (service,):
        for path, method in itertools.product(DOT_DOT_PATHS, ("PUT", "GET")):
            with socket.create_connection(("127.0.0.1", service.port), timeout=5) as conn:
                conn.sendall(
                    f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    "Content-Length: 1\r\nConnection: close\r\n\r\n1".encode()
                )
                reply = b""
                while chunk := conn.recv(65536):
                    reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 400"), reply
            assert b"application/problem+json" in head
            assert json.loads(body)["code"] == "invalid_key"
        listing = httpx.get(service.url + "/v1/kv").json()
        assert listing["items"] == [] and listing["revision"] == 0


async def send_raw(
    client: httpx.AsyncClient, method: str, path: str, **kwargs: object
) -> httpx.Response:
    """Send ``path`` byte for byte: httpx would otherwise resolve '..' segments itself."""
    request = client.build_request(method, "/", **kwargs)  # type: ignore[arg-type]
    request.url = request.url.copy_with(raw_path=path.encode())
    return await client.send(request)


async def test_longest_key_is_accepted(client: httpx.AsyncClient) -> None:
    key = "k/" * 255 + "ab"
    assert len(key) == 512
    assert (await client.put(f"/v1/kv/{key}", json=1)).status_code == 201
    assert (await client.get(f"/v1/kv/{key}")).json()["key"] == key


@pytest.mark.parametrize(
    "ttl", ["-1", "abc", "NaN", "nan", "inf", "400d", "9000h", "31536001", "-5s", "1x", "5 s", "s"]
)
async def test_bad_ttls(client: httpx.AsyncClient, ttl: str) -> None:
    before = await revision(client)
    body = problem(await client.put("/v1/kv/k", json=1, params={"ttl": ttl}), 400, "invalid_ttl")
    assert "ttl" in body["detail"].lower()
    problem(await client.post("/v1/kv/k/increment", json={"ttl": ttl}), 400, "invalid_ttl")
    assert await revision(client) == before
    problem(await client.get("/v1/kv/k"), 404, "not_found")


async def test_largest_ttl_is_accepted(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/kv/k", json=1, params={"ttl": str(365 * 24 * 3600)})
    assert r.status_code == 201


@pytest.mark.parametrize(
    "body", [b"{", b"{'a': 1}", b"NaN", b"[1,]", b"", b"\xff\xfe", b"1 2", b"Infinity"]
)
async def test_malformed_json(client: httpx.AsyncClient, body: bytes) -> None:
    before = await revision(client)
    r = await client.put("/v1/kv/k", content=body, headers={"content-type": "application/json"})
    problem(r, 400, "invalid_request")
    assert await revision(client) == before


async def test_non_utf8_text_plain(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/kv/k", content=b"\xff", headers={"content-type": "text/plain"})
    problem(r, 400, "invalid_request")


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "application/octet-stream", "text/html", "image/png"],
)
async def test_unsupported_content_type(client: httpx.AsyncClient, content_type: str) -> None:
    before = await revision(client)
    r = await client.put("/v1/kv/k", content=b"1", headers={"content-type": content_type})
    body = problem(r, 415, "unsupported_media_type")
    assert "application/json" in body["detail"]
    assert await revision(client) == before


async def test_value_over_the_limit_is_413(make_client: ClientFactory) -> None:
    async with make_client(max_value_bytes=1000) as client:
        before = await revision(client)
        ok = '"' + "x" * 998 + '"'
        assert (await client.put("/v1/kv/k", content=ok,
                                 headers={"content-type": "application/json"})).status_code == 201
        big = '"' + "x" * 999 + '"'
        problem(await client.put("/v1/kv/k", content=big,
                                 headers={"content-type": "application/json"}),
                413, "payload_too_large")
        problem(await client.put("/v1/kv/k2", content=b"x" * 5000,
                                 headers={"content-type": "text/plain"}),
                413, "payload_too_large")
        # a body far over the limit is refused from its Content-Length, unread
        problem(await client.put("/v1/kv/k2", content=b"1" * 10_000_000,
                                 headers={"content-type": "application/json"}),
                413, "payload_too_large")
        # a patch whose result would be too large
        problem(await client.patch("/v1/kv/k", content='["' + "y" * 1000 + '"]',
                                   headers={"content-type": "application/merge-patch+json"}),
                413, "payload_too_large")
        assert await revision(client) == before + 1
        assert (await client.get("/v1/kv/k")).json()["value"] == "x" * 998
        problem(await client.get("/v1/kv/k2"), 404, "not_found")


async def test_chunked_body_over_the_limit_is_413(make_client: ClientFactory) -> None:
    async def chunks() -> object:
        for _ in range(100):
            yield b"1" * 100

    async with make_client(max_value_bytes=1000) as client:
        before = await revision(client)
        r = await client.put("/v1/kv/k", content=chunks(),  # type: ignore[arg-type]
                             headers={"content-type": "application/json"})
        problem(r, 413, "payload_too_large")
        assert await revision(client) == before


@pytest.mark.parametrize(
    "params",
    [
        {"pattern": ""},
        {"pattern": "a b"},
        {"pattern": "a?"},
        {"pattern": "x" * 600},
    ],
)
async def test_bad_patterns(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    problem(await client.get("/v1/kv", params=params), 400, "invalid_pattern")


@pytest.mark.parametrize(
    "params",
    [{"limit": "0"}, {"limit": "abc"}, {"limit": "100000"}, {"cursor": "!!!"},
     {"cursor": "Li4v"}, {"values": "maybe"}],
)
async def test_bad_list_parameters(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    problem(await client.get("/v1/kv", params=params), 400, "invalid_request")


async def test_unknown_route_and_method(client: httpx.AsyncClient) -> None:
    problem(await client.get("/v1/nothing"), 404, "not_found")
    problem(await client.post("/v1/kv/k"), 405, "method_not_allowed")
    problem(await client.put("/v1/kv"), 405, "method_not_allowed")
