"""Fixtures of the client and CLI tests: one real service process per backend for a test
module (memory, and Redis in its own database), a fresh namespace for every test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis

from corkboard.client import AsyncCorkboard, Corkboard
from tests.conftest import BACKENDS
from tests.support import ServiceProcess, running

#: Small limits, so that the limit errors are cheap to reach.
SERVICE_ENV = {
    "CORKBOARD_SWEEP_INTERVAL_SECONDS": "0.05",
    "CORKBOARD_MAX_VALUE_BYTES": "65536",
    "CORKBOARD_MAX_ARTIFACT_BYTES": "1048576",
    "CORKBOARD_LOG_LEVEL": "warning",
}
#: The client tests' Redis database: the ``backend`` fixture flushes database 0 per
#: test, which must not pull the state from under a module's running service.
CLIENT_DB = 5


def redis_db(url: str, db: int) -> str:
    base, _, last = url.rpartition("/")
    return f"{base}/{db}" if last.isdigit() else f"{url.rstrip('/')}/{db}"


@pytest.fixture(scope="module", params=BACKENDS)
def service(request: pytest.FixtureRequest) -> Iterator[ServiceProcess]:
    """A uvicorn process on memory or Redis, shared by the tests of one module."""
    if request.param == "memory":
        url = "memory://"
    else:
        url = redis_db(request.getfixturevalue("redis_url"), CLIENT_DB)
        r = redis.Redis.from_url(url)
        r.flushdb()
        r.close()
    with running(ServiceProcess({**SERVICE_ENV, "CORKBOARD_BACKEND": url})) as (proc,):
        yield proc


def fresh_ns() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def ns() -> str:
    """A namespace of this test alone: its revisions start at 1."""
    return fresh_ns()


@pytest.fixture
def cb(service: ServiceProcess, ns: str) -> Iterator[Corkboard]:
    with Corkboard(service.url, ns=ns) as client:
        yield client


@pytest.fixture
async def acb(service: ServiceProcess, ns: str) -> AsyncIterator[AsyncCorkboard]:
    async with AsyncCorkboard(service.url, ns=ns) as client:
        yield client
