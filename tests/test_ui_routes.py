"""The dashboard's and docs' routes without a browser: public even with tokens, every
asset from the package, HEAD and 405 as on every other route, and none in the schema."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx

from tests.helpers import problem

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]
TOKENS = json.dumps([{"token": "ui-routes-token-0123456789", "namespaces": ["*"],
                      "permissions": ["read"]}])


async def test_pages_and_assets_are_public_and_local(make_client: ClientFactory) -> None:
    async with make_client(tokens=TOKENS) as client:
        ui = await client.get("/ui")
        assert ui.status_code == 200
        assert ui.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in ui.headers["content-security-policy"]
        assets = re.findall(r'(?:src|href)="([^"]+)"', ui.text)
        assert "ui/static/app.js" in assets
        for asset in assets:
            assert not re.match(r"(https?:)?//", asset), asset
            if asset.startswith("ui/"):
                r = await client.get("/" + asset)
                assert r.status_code == 200, asset
        # Every module the page imports, and every module they import, is served.
        seen: set[str] = set()
        todo = ["app.js"]
        while todo:
            module = todo.pop()
            seen.add(module)
            r = await client.get(f"/ui/static/{module}")
            assert r.status_code == 200, module
            assert "javascript" in r.headers["content-type"]
            imported = re.findall(r'^import .* from "\./([\w.-]+\.js)";$', r.text, re.M)
            todo += [m for m in imported if m not in seen]
        assert {"api.js", "keys.js", "leases.js", "stream.js", "views.js"} <= seen
        for page, asset in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
            html = (await client.get(page)).text
            assert f"/ui/docs-assets/{asset}" in html
            assert not re.search(r"(?:src|href)=['\"](https?:)?//", html), html
            r = await client.head(f"/ui/docs-assets/{asset}")
            assert r.status_code == 200 and int(r.headers["content-length"]) > 100_000
        # The data stays behind the tokens.
        problem(await client.get("/v1/kv"), 401, "unauthorized")


async def test_head_and_405_on_the_pages(client: httpx.AsyncClient) -> None:
    got = await client.get("/ui")
    head = await client.head("/ui")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    r = await client.post("/ui")
    problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD"
    r = await client.delete("/ui/static/app.js")
    problem(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD"
    problem(await client.get("/ui/static/nothing.js"), 404, "not_found")


async def test_pages_are_not_in_the_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert not [p for p in paths if p.startswith(("/ui", "/docs", "/redoc"))]
