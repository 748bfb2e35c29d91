"""Lock throughput: acquire+release cycles per second, uncontended and contended.

Runs Corkboard on memory:// and on a private redis-server, and, when ``etcd`` is on PATH,
etcd's gRPC gateway lock (``/v3/lock/lock`` + ``/v3/lock/unlock``, one lease per client,
as etcd's own ``concurrency.Session`` does) in the same run, with the same HTTP client.

    python bench/lock_bench.py [--seconds 5] [--contenders 10] [--json out.json]

Every server is started here on free ports and stopped at the end. Reported, never
asserted: the numbers depend on the machine (and on what else it runs).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

Cycle = Callable[[httpx.AsyncClient, int], Awaitable[None]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_http(url: str, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with suppress(httpx.HTTPError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.05)
    raise TimeoutError(f"{url} did not answer")


def stop(proc: subprocess.Popen[Any], what: str) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        print(f"warning: {what} did not stop within 30s of SIGTERM; killed", file=sys.stderr)
        proc.kill()
        proc.wait()


@contextmanager
def corkboard(backend: str) -> Iterator[str]:
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "app.main:app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning"]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "CORKBOARD_BACKEND": backend},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/healthz", proc)
        yield url
    finally:
        stop(proc, f"corkboard on {backend.split(':', 1)[0]}")


@contextmanager
def redis_server() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="lockbench-redis-") as tmp:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            stop(proc, "redis-server")


@contextmanager
def etcd_server() -> Iterator[str]:
    client, peer = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="lockbench-etcd-") as tmp:
        proc = subprocess.Popen(
            ["etcd", "--data-dir", tmp, "--name", "bench",
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"bench=http://127.0.0.1:{peer}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{client}"
        try:
            wait_http(url + "/health", proc)
            yield url
        finally:
            stop(proc, "etcd")


# -- one acquire+release cycle per system --------------------------------------------------


def corkboard_cycle(lock: str) -> Cycle:
    async def cycle(c: httpx.AsyncClient, who: int) -> None:
        r = await c.post(f"/v1/locks/{lock}", json={"owner": f"c{who}", "ttl": "30s",
                                                   "wait": 60})
        r.raise_for_status()
        token = r.json()["token"]
        r = await c.post(f"/v1/locks/{lock}/release", json={"owner": f"c{who}", "token": token})
        r.raise_for_status()

    return cycle


def etcd_cycle(lock: str) -> tuple[Cycle, Callable[[httpx.AsyncClient, int], Awaitable[None]]]:
    leases: dict[int, str] = {}
    name = base64.b64encode(lock.encode()).decode()

    async def setup(c: httpx.AsyncClient, who: int) -> None:
        r = await c.post("/v3/lease/grant", json={"TTL": 30})
        r.raise_for_status()
        leases[who] = r.json()["ID"]

    async def cycle(c: httpx.AsyncClient, who: int) -> None:
        r = await c.post("/v3/lock/lock", json={"name": name, "lease": leases[who]})
        r.raise_for_status()
        r = await c.post("/v3/lock/unlock", json={"key": r.json()["key"]})
        r.raise_for_status()

    return cycle, setup


async def measure(
    url: str, cycle: Cycle, clients: int, seconds: float,
    setup: Callable[[httpx.AsyncClient, int], Awaitable[None]] | None = None,
) -> float:
    """Cycles per second of ``clients`` loops, each on its own connection."""
    conns = [httpx.AsyncClient(base_url=url, timeout=120) for _ in range(clients)]
    try:
        for i, c in enumerate(conns):
            if setup is not None:
                await setup(c, i)
            await cycle(c, i)  # warm the connection
        counts = [0] * clients
        stop = time.monotonic() + seconds

        async def loop(i: int) -> None:
            while time.monotonic() < stop:
                await cycle(conns[i], i)
                counts[i] += 1

        started = time.monotonic()
        await asyncio.gather(*(loop(i) for i in range(clients)))
        return sum(counts) / (time.monotonic() - started)
    finally:
        for c in conns:
            await c.aclose()


async def bench_system(name: str, url: str, args: argparse.Namespace) -> dict[str, float]:
    if name == "etcd":
        results = {}
        for label, n in (("uncontended", 1), (f"{args.contenders} contenders", args.contenders)):
            cycle, setup = etcd_cycle(f"bench-{label}")
            results[label] = await measure(url, cycle, n, args.seconds, setup)
        return results
    return {
        "uncontended": await measure(url, corkboard_cycle("bench/solo"), 1, args.seconds),
        f"{args.contenders} contenders": await measure(
            url, corkboard_cycle("bench/shared"), args.contenders, args.seconds),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--contenders", type=int, default=10)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    results: dict[str, dict[str, float]] = {}
    with corkboard("memory://") as url:
        results["corkboard memory"] = asyncio.run(bench_system("memory", url, args))
    if shutil.which("redis-server"):
        with redis_server() as redis_url, corkboard(redis_url) as url:
            results["corkboard redis"] = asyncio.run(bench_system("redis", url, args))
    else:
        print("redis-server not found: Redis skipped", file=sys.stderr)
    if shutil.which("etcd"):
        with etcd_server() as url:
            results["etcd gateway"] = asyncio.run(bench_system("etcd", url, args))
    else:
        print("etcd not found: etcd skipped (apt-get install etcd-server)", file=sys.stderr)

    columns = ["uncontended", f"{args.contenders} contenders"]
    print(f"{'acquire+release cycles/s':28}" + "".join(f"{c:>18}" for c in columns))
    for system, row in results.items():
        print(f"{system:28}" + "".join(f"{row[c]:>18.0f}" for c in columns))
    if args.json:
        Path(args.json).write_text(json.dumps({"seconds": args.seconds, "results": results},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
