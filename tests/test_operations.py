"""Operations: request ids, access logs, metrics, CORS and body limits."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest

from app import observability
from app.observability import AccessLog
from app.syntax import iso_ms
from tests.helpers import problem

ClientFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


async def test_request_id_is_echoed_or_made(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/kv/k", headers={"x-request-id": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    made = {(await client.get("/healthz")).headers["x-request-id"] for _ in range(3)}
    assert len(made) == 3
    # an unreasonable id is replaced, not echoed
    r = await client.get("/healthz", headers={"x-request-id": "a b" + "x" * 200})
    assert r.headers["x-request-id"] != "a b" + "x" * 200


def test_access_log_lines_are_json_and_redact_tokens() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream)
    log.record("r-1", "GET", "/v1/events", b"ns=a&access_token=secret", "/v1/events", 200,
               0.0012, 10, None)
    assert stream.getvalue() == b""  # buffered until flushed
    log.flush()
    line = json.loads(stream.getvalue())
    assert line["level"] == "info" and line["logger"] == "corkboard.access"
    assert line["status"] == 200 and line["time"].endswith("Z")
    assert line["query"] == "ns=a&access_token=***" and b"secret" not in stream.getvalue()
    assert line["duration_ms"] == 1.2 and line["request_id"] == "r-1"


def test_access_log_lines_carry_their_own_time_and_duration(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each line has the time its request was recorded at (to the millisecond) and its
    duration in milliseconds to the microsecond, however many lines share a flush."""
    start_ms = 1_764_000_000_000
    clock = iter([start_ms * 1_000_000, start_ms * 1_000_000 + 400_000,
                  (start_ms + 5) * 1_000_000 + 999_999])
    monkeypatch.setattr(observability.time, "time_ns", lambda: next(clock))
    stream = io.BytesIO()
    log = AccessLog(stream)
    for seconds in (0.00123456, 0.0000004, 2.5):
        log.record("r", "GET", "/healthz", b"", "/healthz", 200, seconds, 2, None)
    log.flush()
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    assert [x["time"] for x in lines] == [
        iso_ms(start_ms), iso_ms(start_ms), iso_ms(start_ms + 5)]
    assert [x["duration_ms"] for x in lines] == [1.235, 0.0, 2500.0]


def test_access_log_text_lines_escape_control_characters() -> None:
    stream = io.BytesIO()
    log = AccessLog(stream, fmt="text")
    log.record("r-2", "GET", "/v1/kv/a\nb", b"", "/v1/kv/{key}", 404, 0.001, 5, "ops")
    log.flush()
    [line] = stream.getvalue().splitlines()
    assert b"path=/v1/kv/a\\x0ab" in line and b"status=404" in line and b"token=ops" in line


async def test_access_log_records_requests(make_client: ClientFactory, capfdbinary: object) -> None:
    async with make_client() as client:
        await client.put("/v1/kv/k", json=1, headers={"x-request-id": "req-1"})
        await client.get("/v1/events", params={"access_token": "secret-token-value", "ns": "x"})
    out = capfdbinary.readouterr().err  # type: ignore[attr-defined]
    lines = [json.loads(x) for x in out.splitlines() if b"corkboard.access" in x]
    put = next(x for x in lines if x["request_id"] == "req-1")
    assert put["method"] == "PUT" and put["status"] == 201 and put["route"] == "/v1/kv/{key}"
    assert put["duration_ms"] >= 0
    assert b"secret-token-value" not in out
    events = next(x for x in lines if x["path"] == "/v1/events")
    assert "access_token=***" in events["query"]


async def test_metrics_move(client: httpx.AsyncClient) -> None:
    before = (await client.get("/metrics")).text
    await client.put("/v1/kv/k", json=1)
    await client.get("/v1/kv/k")
    await client.get("/v1/kv/missing")
    after = (await client.get("/metrics")).text
    assert 'corkboard_http_requests_total{method="GET",route="/v1/kv/{key}",status="200"} 1.0' \
        in after
    assert 'corkboard_http_requests_total{method="GET",route="/v1/kv/{key}",status="404"} 1.0' \
        in after
    assert "corkboard_http_request_duration_seconds_bucket" in after
    assert after != before


async def test_cors(make_client: ClientFactory) -> None:
    async with make_client(cors_origins="https://dash.example, https://ops.example") as client:
        r = await client.options("/v1/kv/k", headers={
            "origin": "https://dash.example", "access-control-request-method": "PUT",
            "access-control-request-headers": "authorization,if-match"})
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://dash.example"
        r = await client.get("/v1/kv/k", headers={"origin": "https://ops.example"})
        assert r.headers["access-control-allow-origin"] == "https://ops.example"
        assert "ETag" in r.headers["access-control-expose-headers"]
        r = await client.get("/v1/kv/k", headers={"origin": "https://evil.example"})
        assert "access-control-allow-origin" not in r.headers


async def test_cors_preflight_needs_no_token(make_client: ClientFactory) -> None:
    tokens = '[{"token": "0123456789abcdefgh", "namespaces": ["*"], "permissions": ["read"]}]'
    async with make_client(cors_origins="https://dash.example", tokens=tokens) as client:
        r = await client.options("/v1/kv", headers={
            "origin": "https://dash.example", "access-control-request-method": "GET"})
        assert r.status_code == 200


async def test_request_body_limit(make_client: ClientFactory) -> None:
    async with make_client(max_request_bytes=2048) as client:
        problem(await client.post("/v1/kv/k/touch", content=b" " * 4096,
                                  headers={"content-type": "application/json"}),
                413, "payload_too_large")

        async def chunks() -> object:
            for _ in range(10):
                yield b" " * 512

        r = await client.post("/v1/kv/k/increment", content=chunks(),  # type: ignore[arg-type]
                              headers={"content-type": "application/json"})
        problem(r, 413, "payload_too_large")
        assert (await client.get("/v1/kv")).json()["revision"] == 0


async def test_lock_waits_are_measured(client: httpx.AsyncClient) -> None:
    await client.post("/v1/locks/l", json={"owner": "a", "ttl": "30s"})
    r = await client.post("/v1/locks/l", json={"owner": "b", "wait": "0.1s"})
    assert r.status_code == 409
    text = (await client.get("/metrics")).text
    assert 'corkboard_lock_wait_seconds_count{outcome="timeout"} 1.0' in text


async def test_watchers_per_process_are_capped(make_client: ClientFactory) -> None:
    import asyncio

    async with make_client(max_watchers=2) as client:
        waiting = [
            asyncio.create_task(client.get("/v1/events", params={"since": 0, "wait": "1.5s"}))
            for _ in range(2)
        ]
        # the two long polls hold their subscriptions until an event or their wait ends
        for _ in range(200):
            if "corkboard_watchers_open 2.0" in (await client.get("/metrics")).text:
                break
            await asyncio.sleep(0.005)
        else:
            raise AssertionError("the long polls never opened their subscriptions")
        r = await client.get("/v1/events", params={"since": 0})
        body = problem(r, 503, "too_many_watchers")
        assert r.headers["retry-after"] == "1" and "CORKBOARD_MAX_WATCHERS" in body["detail"]
        await client.put("/v1/kv/k", json=1)  # wakes both waiters
        assert all(t.status_code == 200 for t in await asyncio.gather(*waiting))
        assert (await client.get("/v1/events", params={"since": 0})).status_code == 200


def test_request_metrics_render_counts_latency_buckets_and_in_flight() -> None:
    from prometheus_client import generate_latest

    from app.request_metrics import Metrics

    metrics = Metrics()
    stats = metrics.requests
    stats.started += 4  # three finish below, one is still being served
    stats.record("/v1/kv/{key}", "GET", 200, 0.0004)
    stats.record("/v1/kv/{key}", "GET", 404, 0.003)
    stats.record("/v1/kv/{key}", "PUT", 201, 20.0)
    text = generate_latest(metrics.registry).decode()
    route = 'route="/v1/kv/{key}"'
    assert f'corkboard_http_requests_total{{method="GET",{route},status="200"}} 1.0' in text
    assert f'corkboard_http_requests_total{{method="GET",{route},status="404"}} 1.0' in text
    # Latency is by route and method: the two GETs share one histogram, cumulative.
    get = f'method="GET",{route}'
    assert f'corkboard_http_request_duration_seconds_bucket{{le="0.0005",{get}}} 1.0' in text
    assert f'corkboard_http_request_duration_seconds_bucket{{le="0.005",{get}}} 2.0' in text
    assert f'corkboard_http_request_duration_seconds_count{{{get}}} 2.0' in text
    put = f'method="PUT",{route}'
    assert f'corkboard_http_request_duration_seconds_bucket{{le="10.0",{put}}} 0.0' in text
    assert f'corkboard_http_request_duration_seconds_bucket{{le="+Inf",{put}}} 1.0' in text
    assert f'corkboard_http_request_duration_seconds_sum{{{put}}} 20.0' in text
    assert "corkboard_http_requests_in_flight 1.0" in text
    for i in range(100):  # any method a client invents is one "OTHER" cell
        stats.record("unmatched", f"X{i}", 405, 0.001)
    text = generate_latest(metrics.registry).decode()
    assert 'corkboard_http_requests_total{method="OTHER",route="unmatched",status="405"} 100.0' \
        in text and "X1" not in text
