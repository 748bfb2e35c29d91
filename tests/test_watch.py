"""GET /v1/watch against real uvicorn processes on both backends: delivery, filters,
resume without gap or duplicate across cuts, reset, snapshot + tail, heartbeats,
overflow, resource release and shutdown.

Each test uses its own namespace, so the module's servers are shared safely.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ISO_MS
from tests.redis_cluster import RedisCluster
from tests.sse import Frame, Parser, Stream, event_matches, watch
from tests.support import ServiceProcess, running

#: Settings of the module's main server: quick heartbeats and progress, small list pages
#: (so snapshots span several pages), diagnostics on.
MAIN_ENV = {
    "CORKBOARD_HEARTBEAT_SECONDS": "0.5",
    "CORKBOARD_WATCH_PROGRESS_SECONDS": "0.3",
    "CORKBOARD_MAX_LIST_LIMIT": "50",
    "CORKBOARD_SWEEP_INTERVAL_SECONDS": "0.05",
    "CORKBOARD_DEBUG_ENDPOINTS": "1",
}
CONTROL = {"progress", "synced", "reset", "overflow"}


def new_ns() -> str:
    return "w" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module", params=["memory", "redis", "cluster", "nats"])
def backend_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "nats":
        nats: str = request.getfixturevalue("nats_url")
        return nats
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        return cluster.url
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture(scope="module")
def service(backend_url: str) -> Iterator[ServiceProcess]:
    with running(ServiceProcess({"CORKBOARD_BACKEND": backend_url, **MAIN_ENV})) as [svc]:
        yield svc


@pytest.fixture(scope="module")
def tight_service(backend_url: str) -> Iterator[ServiceProcess]:
    """A server that keeps only 10 events per namespace."""
    env = {"CORKBOARD_BACKEND": backend_url, "CORKBOARD_EVENT_RETENTION": "10",
           "CORKBOARD_WATCH_PROGRESS_SECONDS": "0.3"}
    with running(ServiceProcess(env)) as [svc]:
        yield svc


def client_for(svc: ServiceProcess, **kw: Any) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=50)
    return httpx.AsyncClient(base_url=svc.url, timeout=30, limits=limits, **kw)


@pytest.fixture
async def http(service: ServiceProcess) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(service) as c:
        yield c


async def put(c: httpx.AsyncClient, ns: str, key: str, value: Any, **params: Any) -> int:
    r = await c.put(f"/v1/kv/{key}", json=value, params={"ns": ns, **params})
    assert r.status_code in (200, 201), r.text
    revision: int = r.json()["revision"]
    return revision


async def current(c: httpx.AsyncClient, ns: str) -> int:
    r = await c.get("/v1/kv", params={"ns": ns, "limit": 1})
    assert r.status_code == 200, r.text
    revision: int = r.json()["revision"]
    return revision


async def full_log(c: httpx.AsyncClient, ns: str) -> list[dict[str, Any]]:
    r = await c.get("/v1/events", params={"ns": ns, "since": 0, "limit": 10_000})
    assert r.status_code == 200, r.text
    found: list[dict[str, Any]] = r.json()["events"]
    assert found and found[0]["revision"] == 1, "the whole log should be retained"
    return found


def check_event(frame: Frame, ns: str, type_: str, key: str, value: Any, old: Any) -> int:
    data = frame.json
    assert frame.event == type_ == data["type"], frame
    assert frame.id == str(data["revision"]), frame
    assert data["ns"] == ns and data["key"] == key, data
    assert ISO_MS.fullmatch(data["at"]), data
    assert data["value"] == value and data["old_value"] == old, data
    assert "value" in data and "old_value" in data
    return frame.revision


# -- delivery and filters --------------------------------------------------------------


async def test_every_kv_event_type_arrives_with_its_fields(http: httpx.AsyncClient) -> None:
    ns = new_ns()
    async with watch(http, ns=ns) as s:
        assert s.opening is not None and s.opening.id == "0"  # live from now: revision 0
        await put(http, ns, "a", 1)
        await put(http, ns, "a", {"x": 1})
        r = await http.patch("/v1/kv/a", params={"ns": ns}, content=b'{"y":2}',
                             headers={"content-type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text
        r = await http.post("/v1/kv/n/increment", params={"ns": ns}, json={"by": 5})
        assert r.status_code == 201, r.text
        r = await http.post("/v1/kv/n/touch", params={"ns": ns}, json={"ttl": 60})
        assert r.status_code == 200, r.text  # touch takes no revision: no event
        assert (await http.delete("/v1/kv/a", params={"ns": ns})).status_code == 204
        assert (await http.delete("/v1/kv/a", params={"ns": ns})).status_code == 204  # no-op
        await put(http, ns, "t", "soon", ttl="0.1")
        events = await s.events(7)
        revs = [
            check_event(events[0], ns, "kv.put", "a", 1, None),
            check_event(events[1], ns, "kv.put", "a", {"x": 1}, 1),
            check_event(events[2], ns, "kv.put", "a", {"x": 1, "y": 2}, {"x": 1}),
            check_event(events[3], ns, "kv.put", "n", 5, None),
            check_event(events[4], ns, "kv.delete", "a", None, {"x": 1, "y": 2}),
            check_event(events[5], ns, "kv.put", "t", "soon", None),
            check_event(events[6], ns, "kv.expire", "t", None, "soon"),
        ]
        assert revs == list(range(1, 8))


async def test_filters_by_pattern_types_and_session(http: httpx.AsyncClient) -> None:
    ns = new_ns()
    specs: list[dict[str, Any]] = [
        {"pattern": "cfg.*"}, {"types": "kv.delete"}, {"types": "kv"},
        {"types": "lock,artifact"}, {"pattern": "cfg.a", "types": "kv.put"},
    ]
    async with (
        watch(http, ns=ns, **specs[0]) as s0, watch(http, ns=ns, **specs[1]) as s1,
        watch(http, ns=ns, **specs[2]) as s2, watch(http, ns=ns, **specs[3]) as s3,
        watch(http, ns=ns, **specs[4]) as s4, watch(http, ns=ns, session="s1") as s5,
    ):
        await put(http, ns, "cfg.a", 1)
        await put(http, ns, "other", 2)
        await http.delete("/v1/kv/cfg.a", params={"ns": ns})
        await http.delete("/v1/kv/other", params={"ns": ns})
        final = await put(http, ns, "cfg.b", 3)
        log = await full_log(http, ns)
        for stream, spec in zip((s0, s1, s2, s3, s4), specs, strict=True):
            types = spec.get("types", "").split(",") if "types" in spec else None
            expected = [e["revision"] for e in log if event_matches(e, spec.get("pattern"), types)]
            got = await until(stream, final)
            assert got == expected, (spec, got, expected)
        assert await until(s5, final) == []  # no key event belongs to a session


async def until(stream: Stream, final: int, timeout: float = 10.0) -> list[int]:
    """Revisions of the change events received until the stream has seen ``final``."""
    got: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        frame = await stream.frame(max(0.1, deadline - time.monotonic()))
        assert frame is not None, "stream ended"
        if frame.is_event and frame.event not in CONTROL:
            got.append(frame.revision)
        if frame.id is not None and frame.revision >= final:
            return got


async def test_resume_from_last_event_id_or_since(http: httpx.AsyncClient) -> None:
    ns = new_ns()
    for i in range(5):
        await put(http, ns, f"k{i}", i)
    async with watch(http, ns=ns, since=2) as s:
        assert s.opening is not None and s.opening.id == "2"
        assert [f.revision for f in await s.events(3)] == [3, 4, 5]
        await put(http, ns, "k5", 5)
        assert (await s.event()).revision == 6
    # Last-Event-ID wins over since, as when an EventSource reconnects.
    async with watch(http, ns=ns, since=1, last_event_id=4) as s:
        assert [f.revision for f in await s.events(2)] == [5, 6]
    async with watch(http, ns=ns, since=0) as s:
        assert [f.revision for f in await s.events(6)] == [1, 2, 3, 4, 5, 6]
    async with watch(http, ns=ns, last_event_id=6) as s:
        frame = await s.event()
        assert frame.event == "progress" and frame.revision == 6, frame


async def test_bad_requests_are_refused_before_streaming(http: httpx.AsyncClient) -> None:
    ns = new_ns()
    cases: list[tuple[dict[str, Any], dict[str, str], str]] = [
        ({"pattern": ""}, {}, "invalid_pattern"),
        ({"pattern": "a b"}, {}, "invalid_pattern"),
        ({"types": "kv,bogus"}, {}, "invalid_request"),
        ({"session": "a/b"}, {}, "invalid_key"),
        ({"since": "-1"}, {}, "invalid_request"),
        ({"since": "x"}, {}, "invalid_request"),
        ({"since": "3", "snapshot": "true"}, {}, "invalid_request"),
        ({}, {"last-event-id": "abc"}, "invalid_request"),
        ({"ns": "Bad NS"}, {}, "invalid_request"),
    ]
    before = await _debug(http)
    for params, headers, code in cases:
        r = await http.get("/v1/watch", params={"ns": ns, **params}, headers=headers)
        assert r.status_code == 400, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert r.json()["code"] == code, (params, r.json())
    after = await _debug(http)
    # Refused requests hold nothing: no feed, no watcher, no task left behind. The
    # backend's own tasks come and go (a pipeline flush, a cluster topology refresh), so
    # the task count must come back down to where it was, within a bound.
    assert (after["feeds"], after["watchers"]) == (before["feeds"], before["watchers"])
    deadline = asyncio.get_running_loop().time() + 10
    while after["tasks"] > before["tasks"]:
        assert asyncio.get_running_loop().time() < deadline, (before, after)
        await asyncio.sleep(0.05)
        after = await _debug(http)
    assert await current(http, ns) == 0


# -- exactly once across cuts ----------------------------------------------------------

CUT_FILTERS: list[dict[str, Any]] = [
    {},
    {"pattern": "k1*"},
    {"types": "kv.delete,kv.expire"},
    {"pattern": "*7", "types": "kv.put"},
    {"pattern": "k2*", "types": "kv"},
]


async def _writer(
    c: httpx.AsyncClient, ns: str, rng: random.Random, target: int, seen: list[int]
) -> None:
    """Random changes of every kind until the namespace has passed ``target`` revisions."""

    def saw(r: httpx.Response) -> None:
        if r.status_code in (200, 201):
            seen[0] = max(seen[0], r.json()["revision"])

    while seen[0] < target:
        key = f"k{rng.randrange(30)}"
        op = rng.random()
        if op < 0.55:
            seen[0] = max(seen[0], await put(c, ns, key, rng.randrange(1000)))
        elif op < 0.7:
            r = await c.delete(f"/v1/kv/{key}", params={"ns": ns})
            assert r.status_code == 204
        elif op < 0.8:
            r = await c.post(f"/v1/kv/{key}/increment", params={"ns": ns}, json={"by": 1})
            assert r.status_code in (200, 201, 422), r.text  # 422: not a number
            saw(r)
        elif op < 0.9:
            r = await c.patch(f"/v1/kv/{key}", params={"ns": ns, "initial": "{}"},
                              content=b'{"p":1}',
                              headers={"content-type": "application/merge-patch+json"})
            assert r.status_code in (200, 201), r.text
            saw(r)
        else:
            await put(c, ns, key, "ttl", ttl=f"{rng.randint(20, 200)}ms")


async def _cut_watcher(
    c: httpx.AsyncClient, ns: str, spec: dict[str, Any], rng: random.Random,
    finished: asyncio.Event, final: list[int],
) -> tuple[list[int], int]:
    """Watch with random cuts (at any byte), resuming with Last-Event-ID each time."""
    got: list[int] = []
    last = "0"  # the namespace is new: everything from its first revision
    cuts = 0
    while True:
        budget = rng.choice([0, rng.randint(1, 300), rng.randint(300, 5000),
                             rng.randint(5000, 60_000)])
        headers = {"accept": "text/event-stream", "last-event-id": last}
        # Cut after a random number of bytes or a random time, whichever comes first.
        pause = None if finished.is_set() else rng.uniform(0.005, 0.3)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(pause), c.stream(
                "GET", "/v1/watch", params={"ns": ns, **spec}, headers=headers
            ) as r:
                assert r.status_code == 200
                parser = Parser()
                seen = 0
                async for chunk in r.aiter_raw():
                    cut = not finished.is_set() and seen + len(chunk) >= budget
                    if cut:
                        chunk = chunk[: budget - seen]  # cut anywhere, even mid-line
                    seen += len(chunk)
                    for frame in parser.feed(chunk):
                        assert frame.event != "reset", frame
                        if frame.id is not None:
                            last = frame.id
                        if frame.is_event and frame.event not in CONTROL:
                            got.append(frame.revision)
                    if finished.is_set() and int(last) >= final[0]:
                        return got, cuts
                    if cut:
                        break
        cuts += 1
        await asyncio.sleep(rng.random() * 0.02)


async def test_exactly_once_in_order_across_random_cuts(http: httpx.AsyncClient) -> None:
    ns = new_ns()
    rng = random.Random(20261124)
    finished = asyncio.Event()
    final = [0]
    watchers = [
        asyncio.create_task(_cut_watcher(http, ns, spec, random.Random(rng.random()),
                                         finished, final))
        for spec in CUT_FILTERS
    ]
    async with client_for_url(str(http.base_url)) as writer_client:
        seen = [0]
        await asyncio.gather(*(_writer(writer_client, ns, random.Random(rng.random()), 2000, seen)
                               for _ in range(2)))
        # Wait out the TTLs written last, so their expiry events are in the log.
        await asyncio.sleep(0.35)
        final[0] = await put(writer_client, ns, "done", True)
    finished.set()
    results = await asyncio.wait_for(asyncio.gather(*watchers), 60)
    log = await full_log(http, ns)
    assert log[-1]["revision"] >= final[0] >= 2000
    for spec, (got, cuts) in zip(CUT_FILTERS, results, strict=True):
        types = spec["types"].split(",") if "types" in spec else None
        expected = [e["revision"] for e in log
                    if event_matches(e, spec.get("pattern"), types) and e["revision"] <= final[0]]
        got = [r for r in got if r <= final[0]]
        assert len(got) == len(set(got)), f"duplicates for {spec}"
        assert got == expected, (spec, len(got), len(expected))
        assert cuts >= 5, (spec, cuts)


def client_for_url(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, timeout=30)


# -- reset -----------------------------------------------------------------------------


async def test_resume_from_compacted_revision_gives_reset_first(
    tight_service: ServiceProcess,
) -> None:
    ns = new_ns()
    async with client_for(tight_service) as c:
        for i in range(30):
            await put(c, ns, f"k{i}", i)
        async with watch(c, ns=ns, last_event_id=5) as s:
            frame = await s.event()
            assert frame.event == "reset" and frame.id == "30", frame
            assert frame.json == {"type": "reset", "ns": ns, "revision": 30,
                                  "compacted_revision": 20, "current_revision": 30}
            await put(c, ns, "next", 1)  # then live, after exactly the reset's revision
            assert (await s.event()).revision == 31
        async with watch(c, ns=ns, since=25) as s:  # still retained: no reset
            assert [f.revision for f in await s.events(6)] == [26, 27, 28, 29, 30, 31]
        async with watch(c, ns=ns, since=0) as s:  # 0 after compaction: reset, then live
            frame = await s.event()
            assert frame.event == "reset" and frame.json["compacted_revision"] == 21, frame
            assert frame.json["current_revision"] == 31 and frame.id == "31", frame
        async with watch(c, ns=ns, since=500) as s:  # a revision the namespace never had
            frame = await s.event()
            assert frame.event == "reset" and frame.json["current_revision"] == 31, frame
        r = await c.get("/v1/events", params={"ns": ns, "since": 3})
        assert r.json() == {"events": [{"type": "reset", "ns": ns, "revision": 31,
                                        "compacted_revision": 21, "current_revision": 31}],
                            "revision": 31}


# -- snapshot --------------------------------------------------------------------------


async def test_snapshot_then_synced_then_live(http: httpx.AsyncClient) -> None:
    ns = new_ns()
    await put(http, ns, "cfg.a", {"v": 1})
    await put(http, ns, "cfg.b", 2)
    await put(http, ns, "other", 3)
    await put(http, ns, "cfg.a", {"v": 4})
    async with watch(http, ns=ns, pattern="cfg.*", snapshot=True) as s:
        assert s.opening is not None and s.opening.id is None  # no id before synced
        first, second, synced = await s.events(3)
        for frame in (first, second):
            assert frame.event == "kv.put" and frame.id is None, frame
            assert frame.json["snapshot"] is True and frame.json["old_value"] is None
        assert (first.json["key"], first.json["value"], first.json["revision"]) == (
            "cfg.a", {"v": 4}, 4)
        assert (second.json["key"], second.json["value"]) == ("cfg.b", 2)
        assert ISO_MS.fullmatch(first.json["at"])
        assert synced.event == "synced" and synced.id == "4", synced
        assert synced.json == {"type": "synced", "ns": ns, "revision": 4}
        await put(http, ns, "other", 5)
        await put(http, ns, "cfg.c", 6)
        live = await s.event()
        assert live.revision == 6 and "snapshot" not in live.json
    # A reconnecting EventSource sends Last-Event-ID: it resumes instead of re-snapshotting.
    async with watch(http, ns=ns, pattern="cfg.*", snapshot=True, last_event_id=4) as s:
        assert (await s.event()).revision == 6
    # Types without kv.put: an empty snapshot, still synced at the current revision.
    async with watch(http, ns=ns, types="lock", snapshot=True) as s:
        synced = await s.event()
        assert synced.event == "synced" and synced.revision == 6


async def _churn(c: httpx.AsyncClient, ns: str, rng: random.Random, stop: asyncio.Event) -> int:
    count = 0
    while not stop.is_set() and count < 2500:
        i = rng.randrange(300)
        if rng.random() < 0.3:
            await c.delete(f"/v1/kv/snap/k{i:03d}", params={"ns": ns})
        elif rng.random() < 0.15:
            await put(c, ns, f"other/{i}", i)
        else:
            await put(c, ns, f"snap/k{i:03d}", rng.randrange(10**6))
        count += 1
    return count


async def test_snapshot_and_tail_consistent_under_concurrent_writes(
    http: httpx.AsyncClient,
) -> None:
    ns = new_ns()
    rng = random.Random(7)
    for i in range(0, 300, 2):
        await put(http, ns, f"snap/k{i:03d}", i)
    stop = asyncio.Event()
    async with client_for_url(str(http.base_url)) as w1, client_for_url(str(http.base_url)) as w2:
        writers = [asyncio.create_task(_churn(w, ns, random.Random(rng.random()), stop))
                   for w in (w1, w2)]
        results = []
        for _ in range(3):
            await asyncio.sleep(0.05)
            async with watch(http, ns=ns, pattern="snap/*", snapshot=True) as s:
                snapshot: dict[str, tuple[int, Any]] = {}
                while True:
                    frame = await s.event()
                    if frame.event == "synced":
                        break
                    data = frame.json
                    assert data["snapshot"] is True and frame.id is None
                    snapshot[data["key"]] = (data["revision"], data["value"])
                synced_at = frame.revision
                live: list[dict[str, Any]] = []
                while len(live) < 20:
                    frame = await s.event()
                    if frame.event not in CONTROL:
                        live.append(frame.json)
                results.append((snapshot, synced_at, live))
        stop.set()
        await asyncio.gather(*writers)
    log = await full_log(http, ns)
    assert len(log) < 10_000
    pages_apart = 0
    for snapshot, synced_at, live in results:
        state: dict[str, tuple[int, Any]] = {}
        for e in log:
            if e["revision"] > synced_at:
                break
            if e["key"].startswith("snap/"):
                if e["type"] == "kv.put":
                    state[e["key"]] = (e["revision"], e["value"])
                else:
                    state.pop(e["key"], None)
        assert snapshot == state, f"snapshot at {synced_at} differs from the log's state"
        expected = [e for e in log if e["revision"] > synced_at and e["key"].startswith("snap/")]
        assert live == expected[: len(live)], "gap or duplicate between snapshot and tail"
        pages_apart += len(snapshot) > 50
    assert pages_apart == 3  # every snapshot spanned several listing pages


# -- heartbeats, progress --------------------------------------------------------------


async def test_heartbeat_comments_and_progress_on_a_quiet_stream(
    http: httpx.AsyncClient,
) -> None:
    ns = new_ns()
    async with watch(http, ns=ns, pattern="nothing.*") as s:
        revision = await put(http, ns, "something", 1)
        saw_ping = saw_progress = False
        deadline = time.monotonic() + 5
        while not (saw_ping and saw_progress) and time.monotonic() < deadline:
            frame = await s.frame()
            assert frame is not None
            if frame.comments == ["ping"] and frame.id is None and frame.data is None:
                saw_ping = True
            if frame.event == "progress":
                assert frame.json == {"type": "progress", "ns": ns, "revision": frame.revision}
                saw_progress = frame.revision == revision
        assert saw_ping and saw_progress


# -- resources -------------------------------------------------------------------------


async def _debug(c: httpx.AsyncClient) -> dict[str, int]:
    r = await c.get("/debug/watch")
    assert r.status_code == 200, r.text
    stats: dict[str, int] = r.json()
    return stats


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class RawWatch:
    """A bare-socket SSE client: 500 of them cost the test process little."""

    def __init__(self, port: int, ns: str) -> None:
        self.port, self.ns = port, ns
        self.buffer = b""

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writer.write(f"GET /v1/watch?ns={self.ns} HTTP/1.1\r\nHost: t\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
        await self.read_until(b"corkboard watch")

    async def read_until(self, marker: bytes) -> None:
        while marker not in self.buffer:
            chunk = await asyncio.wait_for(self.reader.read(65536), 20)
            assert chunk, "connection closed"
            self.buffer += chunk

    def close(self) -> None:
        self.writer.transport.abort()


async def test_500_watchers_opened_and_closed_release_everything(
    service: ServiceProcess, http: httpx.AsyncClient,
) -> None:
    assert service.proc is not None
    pid = service.proc.pid

    async def cycle(ns: str) -> None:
        clients = [RawWatch(service.port, ns) for _ in range(500)]
        for i in range(0, 500, 100):
            await asyncio.gather(*(w.open() for w in clients[i : i + 100]))
        stats = await _debug(http)
        assert stats["watchers"] >= 500 and stats["feeds"] >= 1, stats
        await put(http, ns, "hello", "all")
        await asyncio.gather(*(w.read_until(b'"key":"hello"') for w in clients))
        for w in clients:
            w.close()
        deadline = time.monotonic() + 15
        while (await _debug(http))["watchers"] > 0:
            assert time.monotonic() < deadline, await _debug(http)
            await asyncio.sleep(0.05)

    await cycle(new_ns())  # warm-up: first-use allocations (code paths, pools)
    before = await _debug(http)
    rss_before = rss_bytes(pid)
    await cycle(new_ns())
    deadline = time.monotonic() + 15
    while (after := await _debug(http))["tasks"] != before["tasks"]:
        assert time.monotonic() < deadline, (before, after)
        await asyncio.sleep(0.05)
    assert after == before, (before, after)
    grown = rss_bytes(pid) - rss_before
    assert grown < 8 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB over a 500-watcher cycle"


# -- overflow and shutdown (backend-independent: memory only) ---------------------------


def queue_service(backend_url: str, send_timeout: float) -> Iterator[ServiceProcess]:
    if backend_url != "memory://":
        pytest.skip("the queue limit does not depend on the backend")
    env = {"CORKBOARD_BACKEND": backend_url, "CORKBOARD_WATCH_QUEUE_SIZE": "16",
           "CORKBOARD_WATCH_RETRY_MS": "1500", "CORKBOARD_HEARTBEAT_SECONDS": "0.5",
           "CORKBOARD_WATCH_SEND_TIMEOUT_SECONDS": str(send_timeout),
           "CORKBOARD_DEBUG_ENDPOINTS": "1"}
    with running(ServiceProcess(env)) as [svc]:
        yield svc


@pytest.fixture(scope="module")
def small_queue_service(backend_url: str) -> Iterator[ServiceProcess]:
    """A queue of 16 and a send timeout of 1 s: a client that stops reading is cut off."""
    yield from queue_service(backend_url, 1)


@pytest.fixture(scope="module")
def patient_queue_service(backend_url: str) -> Iterator[ServiceProcess]:
    """A queue of 16 and a send timeout of 30 s: a client that pauses while 60 big writes
    are made (seconds on a loaded machine) is not cut off first, and meets the overflow."""
    yield from queue_service(backend_url, 30)


async def test_a_slow_watcher_gets_overflow_and_resumes_without_loss(
    patient_queue_service: ServiceProcess,
) -> None:
    ns = new_ns()
    big = "x" * 400_000
    slow = httpx.AsyncHTTPTransport(
        # A fixed receive buffer (no autotuning to 32 MiB): the queue fills sooner.
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)]
    )
    async with client_for(patient_queue_service) as c, client_for(
        patient_queue_service, transport=slow
    ) as slow_client:
        async with watch(slow_client, ns=ns) as s:
            # The client reads nothing while 60 big events are written: the socket and
            # then the watcher's queue of 16 fill up.
            for i in range(60):
                await put(c, ns, f"k{i}", big)
            got: list[int] = []
            while True:
                frame = await s.frame()
                assert frame is not None, "the stream ended without overflow"
                if frame.event == "overflow":
                    break
                if frame.is_event:
                    got.append(frame.revision)
            assert got == list(range(1, len(got) + 1)) and len(got) < 60
            assert frame.id == str(got[-1]) and frame.retry == 1500, frame
            assert frame.json["last_event_id"] == got[-1]
            while (after := await s.frame()) is not None:  # and the stream ends
                assert after.data is None and after.comments == ["ping"], after
        async with watch(c, ns=ns, last_event_id=frame.id) as s:
            rest = [f.revision for f in await s.events(60 - len(got))]
            assert got + rest == list(range(1, 61))


async def test_a_client_that_never_reads_is_cut_off(small_queue_service: ServiceProcess) -> None:
    """Only heartbeat sends are timed; a client that stops reading blocks them too."""
    ns = new_ns()
    big = "x" * 400_000
    async with client_for(small_queue_service) as c:
        async with watch(c, ns=ns):  # sse-starlette starts its per-process task once
            pass
        while (before := await _debug(c))["watchers"]:
            await asyncio.sleep(0.02)
        reader, writer = await asyncio.open_connection("127.0.0.1", small_queue_service.port)
        writer.transport.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        writer.write(f"GET /v1/watch?ns={ns} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        await reader.readuntil(b"corkboard watch")
        opened = await _debug(c)
        assert opened["watchers"] == 1 and opened["tasks"] > before["tasks"]
        for i in range(40):  # far more than the socket buffers and the queue hold
            await put(c, ns, f"k{i}", big)
        started = time.monotonic()
        try:
            while (now := await _debug(c)) != before:
                assert time.monotonic() - started < 10, (before, now)
                await asyncio.sleep(0.1)
        finally:
            writer.transport.abort()
            await asyncio.sleep(0)


async def test_shutdown_ends_streams_with_a_retry_hint(backend_url: str) -> None:
    if backend_url != "memory://":
        pytest.skip("shutdown does not depend on the backend")
    svc = ServiceProcess({"CORKBOARD_BACKEND": backend_url, "CORKBOARD_WATCH_RETRY_MS": "2500"})
    with running(svc):
        assert svc.proc is not None
        async with client_for(svc) as c:
            ns = new_ns()
            async with watch(c, ns=ns) as a, watch(c, ns=ns, pattern="x*") as b:
                await put(c, ns, "k", 1)
                assert (await a.event()).revision == 1
                started = time.monotonic()
                svc.proc.send_signal(signal.SIGTERM)
                for stream, last in ((a, "1"), (b, "0")):
                    frames: list[Frame] = []
                    while (frame := await stream.frame()) is not None:
                        frames.append(frame)
                    assert stream.ended
                    end = frames[-1]
                    assert end.retry == 2500 and end.id == last, frames
                    assert end.comments == ["server shutting down"] and end.data is None
            # uvicorn re-raises the signal it handled once shut down: -15 is a clean exit.
            assert await asyncio.to_thread(svc.proc.wait, 10) in (0, -signal.SIGTERM)
            assert time.monotonic() - started < 5
