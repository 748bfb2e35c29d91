"""Redis Cluster: writes/s over 30 namespaces on 1 master vs 3 masters, and the latency
cost of ``CORKBOARD_REDIS_WAIT_REPLICAS=1``.

Run from the repo root with the project's virtualenv::

    .venv/bin/python bench/cluster_bench.py [--duration 10] [--procs 2] [--tasks 64]
                                            [--namespaces 30] [--rounds 3]

It starts its own clusters from ``redis-server`` on free loopback ports (never the
Redis on 6379) with tests/redis_cluster.py: one master holding every slot; three
masters; three masters with one replica each. Load comes from ``--procs`` client
processes, each running Corkboard's Redis backend directly (``kv_put``, no HTTP: the
service's own CPU would hide the masters) with ``--tasks`` concurrent writers spread
over the namespaces. Targets run interleaved over ``--rounds``; the medians are shown.
Benchmarks never decide whether the test suite passes. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

VALUE = b'{"status":"running","step":42,"agent":"a1"}'


async def _worker(url: str, seconds: float, tasks: int, namespaces: int, wait: int,
                  seed: int) -> dict[str, Any]:
    from app.backends.redis import RedisBackend

    backend = RedisBackend.from_url(url, wait_replicas=wait, max_connections=tasks + 4)
    await backend.start()
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds

    async def run(i: int) -> None:
        nonlocal errors
        n = 0
        while time.monotonic() < deadline:
            ns = f"bench{(seed * tasks + i + n) % namespaces}"
            start = time.perf_counter()
            try:
                await backend.kv_put(ns, f"k{i % 16}", VALUE)
            except Exception:
                errors += 1
            latencies.append(time.perf_counter() - start)
            n += 1

    await asyncio.gather(*(run(i) for i in range(tasks)))
    await backend.close()
    latencies.sort()
    return {"ops": len(latencies) - errors, "errors": errors, "latencies_ms": [
        round(latencies[int(q * (len(latencies) - 1))] * 1000, 3) for q in (0.5, 0.99)
    ] if latencies else [0, 0]}


def load(url: str, args: argparse.Namespace, *, wait: int = 0, procs: int | None = None,
         tasks: int | None = None) -> dict[str, Any]:
    """Run the client processes at once; writes/s summed, latency percentiles averaged."""
    procs = procs or args.procs
    cmd = [sys.executable, __file__, "--worker", url, "--duration", str(args.duration),
           "--tasks", str(tasks or args.tasks), "--namespaces", str(args.namespaces),
           "--wait", str(wait)]
    running = [
        subprocess.Popen([*cmd, "--seed", str(i)], stdout=subprocess.PIPE, cwd=ROOT)
        for i in range(procs)
    ]
    results = [json.loads(p.communicate(timeout=args.duration + 60)[0]) for p in running]
    return {
        "writes_per_s": sum(r["ops"] for r in results) / args.duration,
        "errors": sum(r["errors"] for r in results),
        "p50_ms": statistics.mean(r["latencies_ms"][0] for r in results),
        "p99_ms": statistics.mean(r["latencies_ms"][1] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=64)
    parser.add_argument("--namespaces", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--wait", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = asyncio.run(_worker(args.worker, args.duration, args.tasks,
                                     args.namespaces, args.wait, args.seed))
        print(json.dumps(result))
        return

    from tests.redis_cluster import RedisCluster

    clusters = {
        "1 master": RedisCluster(size=1, replicas=0),
        "3 masters": RedisCluster(size=3, replicas=0),
        "3 masters + 3 replicas": RedisCluster(size=6, replicas=1),
    }
    try:
        for c in clusters.values():
            c.start()
        runs: dict[str, list[dict[str, Any]]] = {}
        targets = [
            ("1 master", "1 master", {}),
            ("3 masters", "3 masters", {}),
            ("3+3, WAIT 0", "3 masters + 3 replicas", {}),
            ("3+3, WAIT 1", "3 masters + 3 replicas", {"wait": 1}),
            ("3+3, WAIT 0, 1 writer", "3 masters + 3 replicas", {"procs": 1, "tasks": 1}),
            ("3+3, WAIT 1, 1 writer", "3 masters + 3 replicas",
             {"procs": 1, "tasks": 1, "wait": 1}),
        ]
        for r in range(args.rounds):
            for name, cluster, kw in targets[r % len(targets):] + targets[:r % len(targets)]:
                runs.setdefault(name, []).append(load(clusters[cluster].url, args, **kw))
                print(f"round {r + 1}: {name}: {runs[name][-1]}", file=sys.stderr)
    finally:
        for c in clusters.values():
            c.cleanup()
    print(f"cores: {os.cpu_count()}, load average (1, 5, 15 min) at the end: {os.getloadavg()}")
    print(f"{args.procs} client processes x {args.tasks} writers over {args.namespaces} "
          f"namespaces, {args.duration:g} s per run, median of {args.rounds} rounds\n")
    print("| target | writes/s | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|")
    for name, results in runs.items():
        med = {k: statistics.median(x[k] for x in results)
               for k in ("writes_per_s", "p50_ms", "p99_ms", "errors")}
        print(f"| {name} | {med['writes_per_s']:.0f} | {med['p50_ms']:.2f} | "
              f"{med['p99_ms']:.2f} | {med['errors']:.0f} |")


if __name__ == "__main__":
    main()
