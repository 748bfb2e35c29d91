"""Operations under stress (issue: access control, limits and operations): a Redis outage
mid-run, and SIGTERM with open streams and an upload in flight, on real processes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator

import httpx

from tests.sse import watch
from tests.support import RedisServer, ServiceProcess, running


async def collect(client: httpx.AsyncClient, seen: list[int], target: int) -> None:
    """Watch kv events from the start, reconnecting with Last-Event-ID whenever the
    stream ends or cannot be opened, until revision ``target`` has arrived."""
    last = 0
    while last < target:
        try:
            async with watch(client, last_event_id=last, types="kv") as stream:
                while last < target:
                    frame = await stream.frame(timeout=30)
                    if frame is None:
                        break
                    if frame.is_event and frame.event and frame.event.startswith("kv."):
                        seen.append(frame.revision)
                        last = frame.revision
        except (httpx.HTTPError, AssertionError):
            await asyncio.sleep(0.2)


async def wait_ready(client: httpx.AsyncClient, ready: bool, timeout: float = 20) -> None:
    for _ in range(int(timeout / 0.1)):
        r = await client.get("/readyz")
        if (r.status_code == 200) is ready:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"/readyz never became {'ready' if ready else 'unready'}")


async def test_redis_outage_503s_recovery_and_no_lost_event() -> None:
    server = RedisServer(appendonly=True).start()
    env = {"CORKBOARD_BACKEND": server.url, "CORKBOARD_BACKEND_TIMEOUT_SECONDS": "0.5",
           "CORKBOARD_LOG_LEVEL": "warning"}
    try:
        with running(ServiceProcess(env)) as (service,):
            async with httpx.AsyncClient(base_url=service.url, timeout=10) as client:
                seen: list[int] = []
                watcher = asyncio.create_task(collect(client, seen, 60))
                for i in range(30):
                    assert (await client.put(f"/v1/kv/k{i}", json=i)).status_code == 201
                server.stop()
                await wait_ready(client, False)
                for call in (client.put("/v1/kv/x", json=1), client.get("/v1/kv/k1"),
                             client.get("/v1/kv"), client.post("/v1/kv/n/increment", json={})):
                    r = await call
                    assert r.status_code == 503, r.text
                    assert r.json()["code"] == "backend_unavailable"
                    assert r.headers["retry-after"].isdigit()
                server.start()
                await wait_ready(client, True)
                for i in range(30, 60):
                    r = await client.put(f"/v1/kv/k{i}", json=i)
                    assert r.status_code == 201, r.text
                await asyncio.wait_for(watcher, 60)
                assert seen == list(range(1, 61))  # every revision, once, in order
    finally:
        server.cleanup()


async def test_sigterm_ends_streams_cleanly_and_uploads_are_whole_or_absent() -> None:
    server = RedisServer(appendonly=True).start()
    store = tempfile.mkdtemp(prefix="corkboard-files-")
    env = {"CORKBOARD_BACKEND": server.url, "CORKBOARD_ARTIFACTS": f"file://{store}",
           "CORKBOARD_LOG_LEVEL": "warning"}
    body = os.urandom(4 * 1024 * 1024)
    try:
        service = ServiceProcess(env)
        with running(service):
            async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
                started = asyncio.Event()

                async def chunks() -> AsyncIterator[bytes]:
                    for i in range(0, len(body), 256 * 1024):
                        if i:
                            started.set()
                        yield body[i : i + 256 * 1024]
                        await asyncio.sleep(0.03)

                async def upload() -> int | None:
                    try:
                        r = await client.put("/v1/artifacts/big.bin", content=chunks())
                        return r.status_code
                    except httpx.HTTPError:
                        return None

                async with watch(client) as stream:
                    uploading = asyncio.create_task(upload())
                    await started.wait()
                    assert service.proc is not None
                    service.proc.terminate()  # SIGTERM
                    frames = []
                    while (frame := await stream.frame(timeout=20)) is not None:
                        frames.append(frame)
                    # a clean end: a retry hint for EventSource, no error frame
                    assert any(f.retry is not None for f in frames), frames
                    status = await uploading
                    assert status in (201, 200, None)
            assert service.proc is not None
            # uvicorn re-raises SIGTERM after its graceful shutdown: -15 is a clean exit
            assert service.proc.wait(20) in (0, -15)
            assert "Application shutdown complete" in service.output()
        with running(ServiceProcess(env)) as (again,):
            r = httpx.get(f"{again.url}/v1/artifacts/big.bin", timeout=30)
            if status in (200, 201):
                assert r.status_code == 200
                assert hashlib.sha256(r.content).hexdigest() == hashlib.sha256(body).hexdigest()
            else:
                assert r.status_code == 404
    finally:
        server.cleanup()
