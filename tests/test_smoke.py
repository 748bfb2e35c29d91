from __future__ import annotations

import httpx


async def test_put_then_get(client: httpx.AsyncClient) -> None:
    r = await client.put("/v1/kv/a", json={"x": 1})
    assert r.status_code == 201
    r = await client.get("/v1/kv/a")
    assert r.json()["value"] == {"x": 1}
