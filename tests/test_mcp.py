"""The MCP server at /mcp (API.md section 12), driven by the official SDK's own client
over real HTTP against real uvicorn processes: every tool (its happy path and an error),
the token's namespace grant (a tool outside it is `forbidden` and changes nothing; no
token is 401), wait_for_change on a change and on its timeout, and a resource
subscription notified of a change made through /v1 on another replica (Redis).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import httpx2
import mcp_types
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning
from mcp.shared.subscriptions import ResourceUpdated

from tests.support import ServiceProcess, running

AGENT = "agent-token-0123456789"  # read/write on team-a only
ADMIN = "admin-token-0123456789"  # everything
MODERN = "2026-07-28"
TOKENS = json.dumps([
    {"name": "agent", "token": AGENT, "namespaces": ["team-a"], "permissions": ["read", "write"]},
    {"name": "admin", "token": ADMIN, "namespaces": ["*"],
     "permissions": ["read", "write", "admin"]},
])


def env(backend: str, **extra: str) -> dict[str, str]:
    return {"CORKBOARD_BACKEND": backend, "CORKBOARD_TOKENS": TOKENS,
            "CORKBOARD_LOG_LEVEL": "warning", **extra}


@contextlib.asynccontextmanager
async def mcp_client(url: str, token: str, **kw: Any) -> AsyncIterator[Client]:
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30, read=120)
    )
    async with http, Client(streamable_http_client(f"{url}/mcp", http_client=http), **kw) as c:
        yield c


async def call(client: Client, tool: str, **arguments: Any) -> dict[str, Any]:
    """A tool's structured result; fails the test on a tool error."""
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, (tool, result.content)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def fails(client: Client, tool: str, code: str, **arguments: Any) -> dict[str, Any]:
    """The problem of a tool error with ``code``."""
    result = await client.call_tool(tool, arguments)
    assert result.is_error, (tool, result.structured_content)
    problem = result.structured_content
    assert isinstance(problem, dict) and problem["code"] == code, (tool, problem)
    assert problem["detail"]
    text = result.content[0]
    assert getattr(text, "text", "").startswith(f"{code}: ")
    return problem


async def until_watching(http: httpx.AsyncClient) -> None:
    """Returns once /debug/watch counts a watcher in the hub (it offers no event to
    await, so it is polled)."""
    while (await http.get("/debug/watch")).json()["watchers"] == 0:
        await asyncio.sleep(0.01)


async def woken_by_put(
    c: Client, url: str, arguments: dict[str, Any], key: str, value: int, *,
    once_watching: bool,
) -> list[tuple[str, str, Any]]:
    """The events a wait_for_change call on cfg/* returns when a PUT of ``key`` (in the
    namespace ``arguments["ns"]``) follows it (``once_watching``: once the call's poll
    is counted in the hub)."""
    waiting = asyncio.create_task(c.call_tool(
        "wait_for_change", {"pattern": "cfg/*", "timeout": 30, **arguments}))
    async with httpx.AsyncClient(base_url=url,
                                 headers={"Authorization": f"Bearer {AGENT}"}) as http:
        if once_watching:
            await asyncio.wait_for(until_watching(http), 10)
        r = await http.put(f"/v1/kv/{key}", params={"ns": arguments["ns"]}, json=value)
        assert r.status_code == 201
    changed = (await asyncio.wait_for(waiting, 10)).structured_content
    assert changed is not None
    return [(e["type"], e["key"], e["value"]) for e in changed["events"]]


@pytest.fixture
def service(backend: str) -> Iterator[ServiceProcess]:
    with running(ServiceProcess(env(backend, CORKBOARD_DEBUG_ENDPOINTS="true"))) as (svc,):
        yield svc


async def test_every_tool(service: ServiceProcess) -> None:
    ns = {"ns": "team-a"}
    async with mcp_client(service.url, AGENT) as c:
        listed = {t.name: t for t in (await c.list_tools()).tools}
        assert set(listed) == {
            "kv_get", "kv_put", "kv_delete", "kv_list", "kv_patch", "kv_increment",
            "wait_for_change", "lock_acquire", "lock_refresh", "lock_release",
            "session_get_variables", "session_set_variables", "artifact_get_text",
            "artifact_put_text", "txn", "lease_grant", "lease_keepalive",
        }
        assert listed["kv_put"].input_schema["properties"]["if_revision"]

        # kv_put / kv_get
        put = await call(c, "kv_put", key="cfg/app", value={"mode": "a"}, **ns)
        assert put["created"] is True and put["value"] == {"mode": "a"}
        cas = await call(c, "kv_put", key="cfg/app", value={"mode": "b"},
                         if_revision=put["revision"], **ns)
        assert cas["created"] is False and cas["version"] == 2
        stale = await fails(c, "kv_put", "revision_mismatch", key="cfg/app", value=1,
                            if_revision=put["revision"], **ns)
        assert stale["current"]["value"] == {"mode": "b"}
        got = await call(c, "kv_get", key="cfg/app", **ns)
        assert got["value"] == {"mode": "b"} and got["revision"] == cas["revision"]
        await fails(c, "kv_get", "not_found", key="nothing", **ns)

        # kv_patch
        merged = await call(c, "kv_patch", key="cfg/app", merge={"retries": 3}, **ns)
        assert merged["value"] == {"mode": "b", "retries": 3}
        patched = await call(c, "kv_patch", key="cfg/app", **ns, operations=[
            {"op": "replace", "path": "/retries", "value": 4}])
        assert patched["value"]["retries"] == 4
        await fails(c, "kv_patch", "revision_mismatch", key="cfg/app", **ns,
                    operations=[{"op": "test", "path": "/mode", "value": "zzz"}])
        await fails(c, "kv_patch", "invalid_request", key="cfg/app", **ns)

        # kv_increment
        n = await call(c, "kv_increment", key="jobs", by=5, initial=10, **ns)
        assert n["value"] == 15 and n["created"] is True
        await fails(c, "kv_increment", "validation_failed", key="cfg/app", **ns)

        # kv_list
        page = await call(c, "kv_list", pattern="cfg/*", **ns)
        assert [i["key"] for i in page["items"]] == ["cfg/app"] and page["next_cursor"] is None
        await fails(c, "kv_list", "invalid_pattern", pattern="bad pattern", **ns)

        # kv_delete
        assert (await call(c, "kv_delete", key="jobs", **ns))["deleted"] is True
        assert (await call(c, "kv_delete", key="jobs", **ns))["deleted"] is False
        await fails(c, "kv_delete", "invalid_key", key="a//b", **ns)

        # locks
        held = await call(c, "lock_acquire", name="jobs/nightly", owner="a1", ttl="30s", **ns)
        assert held["status"] == "acquired" and held["token"] >= 1
        taken = await fails(c, "lock_acquire", "lock_held", name="jobs/nightly", owner="a2",
                            **ns)
        assert taken["holder"]["owner"] == "a1"
        refreshed = await call(c, "lock_refresh", name="jobs/nightly", owner="a1",
                               token=held["token"], ttl="60s", **ns)
        assert refreshed["status"] == "refreshed" and refreshed["token"] == held["token"]
        await fails(c, "lock_refresh", "lock_not_held", name="jobs/nightly", owner="a1",
                    token=held["token"] + 1, **ns)
        await fails(c, "lock_release", "not_owner", name="jobs/nightly", owner="a2",
                    token=held["token"], **ns)
        released = await call(c, "lock_release", name="jobs/nightly", owner="a1",
                              token=held["token"], **ns)
        assert released["status"] == "released"

        # session variables (registered over HTTP, used over MCP)
        async with httpx.AsyncClient(base_url=service.url,
                                     headers={"Authorization": f"Bearer {AGENT}"}) as http:
            r = await http.post("/v1/sessions/s1/variables", params=ns, json={
                "name": "temperature", "type": "float", "value": 0.7,
                "constraints": {"min": 0, "max": 2}})
            assert r.status_code == 201
        written = await call(c, "session_set_variables", session="s1",
                             updates={"temperature": 1.5}, **ns)
        assert written["updated"] == ["temperature"] and written["revision"]
        refused = await fails(c, "session_set_variables", "constraint_violation",
                              session="s1", updates={"temperature": 5}, **ns)
        assert refused["errors"]["temperature"]["constraint"] == "max"
        read = await call(c, "session_get_variables", session="s1", **ns)
        assert read["variables"]["temperature"]["value"] == 1.5
        assert (await call(c, "session_get_variables", session="s1", names=["nope"],
                           **ns))["variables"] == {}
        await fails(c, "session_get_variables", "invalid_key", session="a/b", **ns)

        # artifacts as text
        stored = await call(c, "artifact_put_text", key="notes/plan.md", text="# Plan\nü", **ns)
        assert stored["created"] is True and stored["size"] == len("# Plan\nü".encode())
        text = await call(c, "artifact_get_text", key="notes/plan.md", **ns)
        assert text["text"] == "# Plan\nü"
        assert text["content_type"] == "text/plain; charset=utf-8"
        await fails(c, "artifact_get_text", "not_found", key="notes/none", **ns)
        await fails(c, "artifact_put_text", "invalid_request", key="x", text="t",
                    content_type="not a type", **ns)

        # wait_for_change: an error, a timeout, then a change
        await fails(c, "wait_for_change", "validation_failed", timeout=61, **ns)
        quiet = await call(c, "wait_for_change", pattern="cfg/*", timeout=0.3, **ns)
        assert quiet["events"] == [] and quiet["revision"] >= got["revision"]

        # From the quiet call's revision: the change is found whether the PUT lands
        # before the call reads the namespace or while it waits (without ``since`` it
        # waits from the revision it reads, and a PUT that came first was missed).
        assert await woken_by_put(c, service.url, {"since": quiet["revision"], **ns},
                                  "cfg/other", 42, once_watching=False) == [
            ("kv.put", "cfg/other", 42)]
        # Without ``since`` the call waits from the revision it reads: the PUT goes once
        # its poll has joined the hub's live feed, and wakes it.
        assert await woken_by_put(c, service.url, ns, "cfg/later", 43,
                                  once_watching=True) == [("kv.put", "cfg/later", 43)]

        # arguments are validated like request bodies
        await fails(c, "kv_put", "validation_failed", key="k", **ns)  # no value
        await fails(c, "kv_get", "invalid_request", key="k", ns="Bad NS")


async def test_txn_and_leases(service: ServiceProcess) -> None:
    ns = {"ns": "team-a"}
    async with mcp_client(service.url, AGENT) as c:
        # txn: the success branch (key absent), then the failure branch (now present)
        ops = {
            "compare": [{"key": "job/owner", "exists": False}],
            "success": [{"op": "put", "key": "job/owner", "value": "a1"},
                        {"op": "increment", "key": "job/claims"}],
            "failure": [{"op": "get", "key": "job/owner"}],
        }
        won = await call(c, "txn", **ops, **ns)
        assert won["succeeded"] is True and len(won["results"]) == 2
        assert won["results"][0]["value"] == "a1" and won["results"][1]["value"] == 1
        assert won["results"][0]["revision"] == won["revision"]
        lost = await call(c, "txn", **ops, **ns)
        assert lost["succeeded"] is False and lost["revision"] == won["revision"]
        assert lost["results"] == [won["results"][0]]
        await fails(c, "txn", "invalid_request", success=[{"op": "nope", "key": "k"}], **ns)
        await fails(c, "txn", "forbidden", success=[{"op": "put", "key": "k", "value": 1}],
                    ns="team-b")

        # leases: grant, keepalive, a key put on the lease, then revoke (HTTP) deletes it
        lease = await call(c, "lease_grant", ttl="30s", id="agent-1", **ns)
        assert lease["id"] == "agent-1" and lease["ttl"] == 30
        generated = await call(c, "lease_grant", ttl=10, **ns)
        assert generated["id"].startswith("lease-")
        await fails(c, "lease_grant", "already_exists", ttl=5, id="agent-1", **ns)
        await fails(c, "lease_grant", "invalid_ttl", ttl=0, **ns)
        kept = await call(c, "lease_keepalive", id="agent-1", **ns)
        assert kept["id"] == "agent-1" and kept["expires_at"] >= lease["expires_at"]
        await fails(c, "lease_keepalive", "lease_not_found", id="nobody", **ns)
        await fails(c, "lease_keepalive", "forbidden", id="agent-1", ns="team-b")
        put = await call(c, "kv_put", key="agents/a1", value="up", lease="agent-1", **ns)
        assert put["created"] is True
        await fails(c, "kv_put", "lease_not_found", key="agents/a2", value=1, lease="nobody",
                    **ns)
        await fails(c, "kv_put", "invalid_request", key="agents/a2", value=1,
                    lease="agent-1", ttl=5, **ns)
        await fails(c, "kv_get", "not_found", key="agents/a2", **ns)
        async with httpx.AsyncClient(base_url=service.url,
                                     headers={"Authorization": f"Bearer {AGENT}"}) as http:
            r = await http.get("/v1/leases/agent-1", params=ns)
            assert r.status_code == 200 and r.json()["keys"] == ["agents/a1"]
            r = await http.delete("/v1/leases/agent-1", params=ns)
            assert r.status_code == 200
        await fails(c, "kv_get", "not_found", key="agents/a1", **ns)
        await fails(c, "lease_keepalive", "lease_not_found", id="agent-1", **ns)


async def test_a_token_is_refused_outside_its_namespace(service: ServiceProcess) -> None:
    async with mcp_client(service.url, AGENT, mode=MODERN) as c:
        await fails(c, "kv_put", "forbidden", key="k", value=1, ns="team-b")
        await fails(c, "kv_get", "forbidden", key="k")  # the default namespace
        await fails(c, "lock_acquire", "forbidden", name="l", owner="o", ns="team-b")
        await fails(c, "artifact_put_text", "forbidden", key="a", text="x", ns="team-b")
        await fails(c, "wait_for_change", "forbidden", timeout=0, ns="team-b")
        with pytest.raises(Exception, match="forbidden"):
            await c.read_resource("corkboard://team-b/kv/k")
        with pytest.raises(Exception, match="forbidden"):
            async with c.listen(resource_subscriptions=["corkboard://team-b/kv/k"]):
                pass
        assert (await c.list_resources()).resources == []  # team-a has no keys yet
    async with httpx.AsyncClient(base_url=service.url,
                                 headers={"Authorization": f"Bearer {ADMIN}"}) as http:
        assert (await http.get("/v1/kv/k", params={"ns": "team-b"})).status_code == 404
        assert (await http.get("/v1/locks/l", params={"ns": "team-b"})).status_code == 404
        assert (await http.get("/v1/artifacts", params={"ns": "team-b"})).json()["items"] == []
    # Without a valid token, /mcp answers 401 like /v1.
    for headers in ({}, {"Authorization": "Bearer not-a-token-at-all"}):
        r = httpx.post(f"{service.url}/mcp", headers=headers, json={})
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"] == 'Bearer realm="corkboard"'
    metrics = httpx.get(f"{service.url}/metrics").text
    assert 'method="POST",route="/mcp",status="200"' in metrics  # (401s: no route yet)



@pytest.mark.redis_only
async def test_resource_subscription_gets_updates_from_another_replica(redis_url: str) -> None:
    from tests.conftest import flush

    flush(redis_url)
    uri = "corkboard://team-a/kv/agents/a1/status"
    replicas = (ServiceProcess(env(redis_url, CORKBOARD_DEBUG_ENDPOINTS="true")),
                ServiceProcess(env(redis_url)))
    with running(*replicas) as (a, b):
        async with httpx.AsyncClient(base_url=b.url,
                                     headers={"Authorization": f"Bearer {AGENT}"}) as http:
            r = await http.put("/v1/kv/agents/a1/status", params={"ns": "team-a"}, json="idle")
            assert r.status_code == 201
            # Pinned: "auto" falls back to 2025 if the discover probe times out (10 s), as
            # it may while a loaded machine imports the SDK on the first request.
            async with mcp_client(a.url, AGENT, mode=MODERN) as c:
                assert uri in [str(r.uri) for r in (await c.list_resources()).resources]
                read = await c.read_resource(uri)
                assert json.loads(read.contents[0].text)["value"] == "idle"  # type: ignore[union-attr]
                async with c.listen(resource_subscriptions=[uri]) as sub:
                    assert sub.honored.resource_subscriptions == [uri]
                    r = await http.put("/v1/kv/agents/a1/status", params={"ns": "team-a"},
                                       json="busy")
                    assert r.status_code == 200
                    event = await asyncio.wait_for(anext(aiter(sub)), 10)
                    assert event == ResourceUpdated(uri=uri)
                read = await c.read_resource(uri)
                assert json.loads(read.contents[0].text)["value"] == "busy"  # type: ignore[union-attr]

            # The 2025 protocol: resources/subscribe, then notifications on the session.
            updated: asyncio.Queue[str] = asyncio.Queue()

            async def on_message(message: Any) -> None:
                if isinstance(message, mcp_types.ResourceUpdatedNotification):
                    updated.put_nowait(message.params.uri)

            async with mcp_client(a.url, AGENT, mode="legacy", message_handler=on_message) as c:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    await c.subscribe_resource(uri)
                r = await http.put("/v1/kv/agents/a1/status", params={"ns": "team-a"},
                                   json="done")
                assert r.status_code == 200
                assert await asyncio.wait_for(updated.get(), 10) == uri
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", MCPDeprecationWarning)
                    await c.unsubscribe_resource(uri)
                    await c.subscribe_resource(uri)  # and leave without unsubscribing
            # Every subscription ended with its stream or session: no watcher is left.
            async with httpx.AsyncClient(base_url=a.url) as debug:
                for _ in range(100):
                    stats = (await debug.get("/debug/watch")).json()
                    if stats["watchers"] == 0:
                        break
                    await asyncio.sleep(0.1)
                assert stats["watchers"] == 0, stats


async def test_subscriptions_end_at_once_when_the_server_shuts_down() -> None:
    """SIGTERM ends an open subscription stream gracefully, as it ends /v1/watch streams,
    rather than holding the shutdown for its grace period (5 s here)."""
    with running(ServiceProcess(env("memory://"))) as (svc,):
        async with mcp_client(svc.url, ADMIN, mode=MODERN) as c:
            await call(c, "kv_put", key="a", value=1)
            async with c.listen(resource_subscriptions=["corkboard://default/kv/a"]) as sub:
                assert svc.proc is not None
                started = time.monotonic()
                svc.proc.terminate()
                async with asyncio.timeout(4):
                    async for _ in sub:  # graceful end: the loop finishes, no SubscriptionLost
                        pass
                await asyncio.to_thread(svc.proc.wait, 4)
                assert time.monotonic() - started < 4
