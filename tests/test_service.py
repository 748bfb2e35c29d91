"""Service endpoints, error shapes, backend outages and the OpenAPI document."""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import httpx

from app.main import create_app
from app.settings import Settings
from tests.helpers import problem
from tests.support import LifespanApp, RedisServer, app_client

SPEC = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


async def test_health_and_readiness(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_capabilities(client: httpx.AsyncClient, backend: str) -> None:
    caps = (await client.get("/v1/capabilities")).json()
    expected = backend.split(":", 1)[0] if backend.startswith(("memory", "nats")) else "redis"
    assert caps["backend"] == expected
    assert caps["persistence"] is caps["distribution"] is (expected != "memory")
    assert caps["atomic_updates"] is True and caps["streaming"] is True
    assert caps["limits"]["max_value_bytes"] == 1_048_576
    assert caps["limits"]["key_history"] == 10
    assert caps["version"]


async def test_capabilities_list_every_limit(
    make_client: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> None:
    """Each configured limit a caller meets is listed with its configured value, and the
    fixed ones (JSON depth, digits) too; the schema names exactly these fields."""
    configured = {
        "max_value_bytes": 2000, "max_request_bytes": 3000, "max_snapshot_bytes": 4000,
        "max_artifact_bytes": 5000, "max_list_limit": 77, "key_history": 7,
        "event_retention": 1234, "event_retention_bytes": 99_999, "namespace_max_keys": 55,
        "namespace_max_bytes": 66_666, "lock_max_waiters": 9, "lock_max_pending": 8,
        "max_watchers": 12, "max_patch_ops": 33, "max_txn_ops": 21,
        "namespace_max_leases": 44, "namespace_max_locks": 45,
    }
    async with make_client(**configured) as c:
        limits = (await c.get("/v1/capabilities")).json()["limits"]
    assert {k: limits[k] for k in configured} == configured
    assert limits["max_json_depth"] == 255 and limits["max_number_digits"] == 20
    assert limits["max_key_bytes"] == 512 and limits["max_events_limit"] == 10_000
    assert limits["max_poll_wait_seconds"] == 300 and limits["max_lock_wait_seconds"] == 60
    assert limits["max_pattern_delete_keys"] == 10_000
    schema = json.loads(SPEC.read_text())["components"]["schemas"]["Limits"]
    assert set(schema["properties"]) == set(limits) == set(schema["required"])


async def test_docs_and_openapi_are_served(client: httpx.AsyncClient) -> None:
    assert (await client.get("/openapi.json")).json()["info"]["title"] == "Corkboard"
    assert "swagger" in (await client.get("/docs")).text.lower()


async def test_request_validation_is_problem_json(client: httpx.AsyncClient) -> None:
    body = problem(await client.post("/v1/kv/k/increment", json={"by": "x"}), 422,
                   "validation_failed")
    assert body["errors"][0]["location"] == ["body", "by", "int"] or body["errors"]
    body = problem(await client.get("/v1/kv", params={"limit": "x"}), 400, "invalid_request")
    assert body["errors"]


def test_openapi_document_has_not_drifted() -> None:
    spec = create_app(Settings()).openapi()
    committed = json.loads(SPEC.read_text())
    assert spec == committed, (
        "openapi/openapi.json is out of date: regenerate it with `corkboard openapi`"
    )


def test_apps_of_one_process_share_the_documents_work_not_the_document() -> None:
    """Generating the document once per process (app starts paid ~1 s each): apps alike
    get equal documents they may change on their own; another page maximum, another one."""
    first, second = create_app(Settings()).openapi(), create_app(Settings()).openapi()
    assert first == second and first is not second
    first["info"]["title"] = "changed"
    assert create_app(Settings()).openapi()["info"]["title"] == "Corkboard"
    other = create_app(Settings(max_list_limit=7)).openapi()

    def limits(spec: dict[str, Any]) -> set[int]:
        return {
            p["schema"]["maximum"]
            for item in spec["paths"].values() for op in item.values()
            for p in op.get("parameters", []) if p["name"] == "limit" and "maximum" in p["schema"]
        }

    # (a route's own maximum, as the history's, stays as the route declares it)
    assert limits(other) - limits(second) == {7} and limits(second) - limits(other) == {1000}


async def test_an_app_that_has_served_is_freed_when_dropped() -> None:
    """Nothing process-wide keeps an app (FastAPI caches every endpoint it sees: endpoints
    that closed over their app kept up to a thousand apps, 14,000 objects each, alive)."""
    app = create_app(Settings())
    served = LifespanApp(app)
    await served.start()
    transport = httpx.ASGITransport(app=served)
    async with httpx.AsyncClient(transport=transport, base_url="http://c") as client:
        for path in ("/ui", "/docs", "/redoc", "/openapi.json", "/v1/kv/k", "/nope"):
            assert (await client.get(path)).status_code in (200, 404)
    await served.stop()
    gone = weakref.ref(app)
    del app, served, transport, client
    gc.collect()
    assert gone() is None


def test_every_operation_has_a_readable_id_and_problem_errors() -> None:
    spec = create_app(Settings()).openapi()
    ids = []
    for path_item in spec["paths"].values():
        for op in path_item.values():
            ids.append(op["operationId"])
            assert op["operationId"].replace("_", "").isalpha()
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert list(response["content"]) == ["application/problem+json"]
    assert len(ids) == len(set(ids))


async def test_redis_outage_is_503_and_recovers() -> None:
    """Redis stopped: 503 with Retry-After, no hang; restarted (AOF on): served again, with
    the Lua scripts reloaded into the new server's empty script cache."""
    server = RedisServer(appendonly=True).start()
    try:
        settings = Settings(backend=server.url, backend_timeout_seconds=0.5)
        async with app_client(settings) as client:
            assert (await client.put("/v1/kv/k", json=1)).status_code == 201
            server.stop()
            for call in (client.get("/v1/kv/k"), client.put("/v1/kv/k", json=2),
                         client.get("/readyz"), client.get("/v1/kv")):
                r = await call
                problem(r, 503, "backend_unavailable")
                assert r.headers["retry-after"].isdigit()
            # concurrent calls go out as one pipeline: each of them fails cleanly
            import asyncio

            batch = await asyncio.gather(*(client.put(f"/v1/kv/c{i}", json=i) for i in range(10)))
            for r in batch:
                problem(r, 503, "backend_unavailable")
            server.start()
            assert (await client.get("/readyz")).status_code == 200
            assert (await client.get("/v1/kv/k")).json()["value"] == 1
            assert (await client.put("/v1/kv/k", json=3)).json()["version"] == 2
    finally:
        server.cleanup()


def test_readme_documents_every_setting() -> None:
    readme = (SPEC.parent.parent / "README.md").read_text()
    missing = [
        f"CORKBOARD_{name.upper()}"
        for name in Settings.model_fields
        if f"`CORKBOARD_{name.upper()}`" not in readme
    ]
    assert not missing, f"settings missing from the README's configuration table: {missing}"


async def test_batched_scripts_survive_flushed_functions(redis_url: str) -> None:
    """Concurrent calls share pipelines; after FUNCTION FLUSH (as after a Redis restart
    without persistence) each call in a batch is re-sent once the scripts' library is
    loaded again, exactly once."""
    import asyncio

    import redis.asyncio as aioredis

    from tests.conftest import flush

    flush(redis_url)
    async with app_client(Settings(backend=redis_url)) as client:
        await client.put("/v1/kv/n", json=0)
        admin = aioredis.Redis.from_url(redis_url)
        try:
            await admin.function_flush()
            assert await admin.function_list() == []
        finally:
            await admin.aclose()
        results = await asyncio.gather(
            *(client.post("/v1/kv/n/increment", json={}) for _ in range(40)),
            *(client.put(f"/v1/kv/k{i}", json=i) for i in range(20)),
        )
        assert all(r.status_code in (200, 201) for r in results), [r.text for r in results]
        assert (await client.get("/v1/kv/n")).json()["value"] == 40
        listing = (await client.get("/v1/kv", params={"pattern": "k*"})).json()
        assert len(listing["items"]) == 20
