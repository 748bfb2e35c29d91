"""The client through real failures: a watch resumes across a restart of the service
process with no gap and no duplicate, safe calls ride out a Redis outage with Retry-After
while unsafe ones fail at once, and tokens give Unauthorized/Forbidden."""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import threading

import httpx
import pytest
import redis

from corkboard.client import (
    AsyncCorkboard,
    BackendUnavailable,
    Corkboard,
    Event,
    Forbidden,
    Unauthorized,
)
from tests.support import ROOT, RedisServer, ServiceProcess, running
from tests.support_client import SERVICE_ENV, fresh_ns, redis_db


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that counts the requests it sends, by method and path."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: collections.Counter[tuple[str, str]] = collections.Counter()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent[(request.method, request.url.path)] += 1
        return super().handle_request(request)


def test_watch_resumes_across_a_service_restart(redis_url: str) -> None:
    url = redis_db(redis_url, 6)
    r = redis.Redis.from_url(url)
    r.flushdb()
    r.close()
    ns = fresh_ns()
    service = ServiceProcess({**SERVICE_ENV, "CORKBOARD_BACKEND": url})
    with running(service), Corkboard(service.url, ns=ns, timeout=5) as cb:
        seen: list[int] = []
        done = threading.Event()
        watch = cb.watch(types="kv", since=0)

        def collect() -> None:
            for item in watch:
                if isinstance(item, Event):
                    seen.append(item.revision)
                    if item.revision == 40:
                        done.set()
                        return

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        for i in range(20):
            cb.put(f"k{i}", i)
        service.stop()  # SIGTERM: the stream ends; the watch reconnects until it is back
        service.start()
        for i in range(20, 40):  # some land before the watch is back: resumed from the log
            cb.put(f"k{i}", i)
        assert done.wait(60), f"the watch stopped at {seen[-1:]}"
        collector.join(10)
        watch.close()
        assert seen == list(range(1, 41))  # every revision once, in order
        assert watch.reconnects >= 1


async def test_watch_that_overflows_reconnects_without_loss() -> None:
    """A watcher that falls more than its queue behind gets ``overflow`` and the stream
    ends; the watch resumes from the last id it delivered and misses nothing."""
    env = {**SERVICE_ENV, "CORKBOARD_BACKEND": "memory://", "CORKBOARD_WATCH_QUEUE_SIZE": "16",
           "CORKBOARD_WATCH_RETRY_MS": "100", "CORKBOARD_MAX_VALUE_BYTES": "1048576"}
    # A fixed receive buffer (no autotuning): the server's queue fills sooner.
    slow = httpx.AsyncHTTPTransport(
        socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)]
    )
    big = "x" * 400_000
    with running(ServiceProcess(env)) as (service,):
        async with AsyncCorkboard(service.url, ns="overflow") as writer, AsyncCorkboard(
            service.url, ns="overflow", transport=slow
        ) as reader:
            await writer.put("k0", 0)
            async with reader.watch(since=0, types="kv") as stream:
                first = await anext(stream)
                assert isinstance(first, Event) and first.revision == 1
                for i in range(1, 60):  # while the watch reads nothing
                    await writer.put(f"k{i}", big)
                revisions = [1]
                while revisions[-1] < 60:
                    item = await anext(stream)
                    assert isinstance(item, Event)
                    revisions.append(item.revision)
                assert revisions == list(range(1, 61))
                assert stream.reconnects >= 1


def test_safe_calls_retry_through_a_redis_outage_and_unsafe_ones_do_not() -> None:
    server = RedisServer(appendonly=True).start()
    env = {**SERVICE_ENV, "CORKBOARD_BACKEND": server.url,
           "CORKBOARD_BACKEND_TIMEOUT_SECONDS": "0.5"}
    transport = CountingTransport()
    try:
        with running(ServiceProcess(env)) as (service,), Corkboard(
            service.url, ns="outage", retries=30, transport=transport
        ) as cb:
            cb.put("k", 1)
            server.stop()
            for call in (lambda: cb.increment("n"),
                         lambda: cb.put("k", 2, if_revision=1),
                         lambda: cb.acquire("L", owner="o")):
                with pytest.raises(BackendUnavailable) as exc:
                    call()
                assert exc.value.status == 503 and exc.value.retry_after is not None
            # Each unsafe call went out exactly once.
            assert transport.sent[("POST", "/v1/kv/n/increment")] == 1
            assert transport.sent[("PUT", "/v1/kv/k")] == 2  # the first put, then the CAS
            assert transport.sent[("POST", "/v1/locks/L")] == 1

            # A read, during an outage that ends while it retries.
            restart = threading.Timer(1.0, server.start)
            restart.start()
            assert cb.get("k").value == 1
            restart.join()
            assert transport.sent[("GET", "/v1/kv/k")] >= 2

            # An unconditional PUT is safe to repeat: same result.
            server.stop()
            restart = threading.Timer(1.0, server.start)
            restart.start()
            assert cb.put("k", 3).value == 3
            restart.join()
            assert transport.sent[("PUT", "/v1/kv/k")] >= 4
            assert cb.get("k").version == 2  # the CAS was never applied, the put once
    finally:
        server.cleanup()


def test_tokens_unauthorized_forbidden_and_cli_exit_code(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = "client-test-token-0001"
    grants = f'[{{"token": "{token}", "namespaces": ["team-a"], "permissions": ["read", "write"]}}]'
    env = {**SERVICE_ENV, "CORKBOARD_BACKEND": "memory://", "CORKBOARD_TOKENS": grants}
    with running(ServiceProcess(env)) as (service,):
        with Corkboard(service.url, ns="team-a", token="") as anonymous:
            with pytest.raises(Unauthorized) as denied:
                anonymous.get("k")
            assert denied.value.status == 401
        with Corkboard(service.url, ns="team-a", token=token) as cb:
            cb.put("k", 1)
            with pytest.raises(Forbidden):
                cb.namespace("team-b").get("k")
        with monkeypatch.context() as m:
            m.setenv("CORKBOARD_TOKEN", token)
            with Corkboard(service.url, ns="team-a") as from_env:
                assert from_env.get_value("k") == 1
        cli_env = {**os.environ, "CORKBOARD_URL": service.url, "CORKBOARD_TOKEN": token}
        run = subprocess.run(
            [sys.executable, "-m", "app.cli", "get", "k", "--ns", "team-b"],
            cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=60,
        )
        assert run.returncode == 4 and run.stderr.startswith("corkboard: forbidden: ")
        assert token not in run.stderr
        run = subprocess.run(
            [sys.executable, "-m", "app.cli", "--ns", "team-a", "get", "k"],
            cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=60,
        )
        assert (run.returncode, run.stdout) == (0, "1\n")
