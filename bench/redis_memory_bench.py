"""Redis memory per key: Corkboard's Redis backend against plain ``SET`` of the same value.

    .venv/bin/python bench/redis_memory_bench.py                 # 10^5 and 10^6 keys
    .venv/bin/python bench/redis_memory_bench.py --keys 100000 --value-bytes 43

For each size it starts a fresh ``redis-server`` of its own on a free loopback port (no
persistence; never the Redis on 6379), reads ``used_memory`` (INFO memory), writes N keys
and reads it again: once through Corkboard's Redis backend (``kv_put`` of the bench value
under ``bench/<i>`` in one namespace, as a PUT through HTTP stores it, with the default
history depth and event retention), once with ``SET cb:bench/<i> <value>``. Memory is not
a timing, so the figures hold on a busy machine.

What a Corkboard key holds beyond the value (app/backends/lua/common.lua): the entry hash
(value, revisions, version, times), its member in the ordered name index, and, while the
event log retains its change (CORKBOARD_EVENT_RETENTION, 100,000 events by default), the
event with its value and that event's size in the log's size list. Above the retention,
events are a fixed cost per namespace, not per key.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import redis
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import LOOPBACK, ManagedProcess, free_port

from app.backends.redis import RedisBackend

VALUE = b'{"status":"running","step":42,"agent":"a1"}'
BATCH = 500


def used_memory(port: int) -> int:
    client = redis.Redis(port=port)
    try:
        info = client.info("memory")
        return int(info["used_memory"])
    finally:
        client.close()


def start_redis(workdir: Path) -> tuple[ManagedProcess, int]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not on PATH (Debian package: redis-server)")
    port = free_port()
    data = workdir / f"redis-{port}"
    data.mkdir()
    argv = [exe, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
            "--dir", str(data), "--protected-mode", "yes"]
    proc = ManagedProcess("redis-server", argv, log_path=data / "log").start()
    proc.wait_for_port(port)
    return proc, port


async def load_corkboard(port: int, keys: int, value: bytes) -> None:
    client = Redis(port=port)
    backend = RedisBackend(client)
    await backend.start()
    try:
        for start in range(0, keys, BATCH):
            await asyncio.gather(*(
                backend.kv_put("bench", f"bench/{i}", value)
                for i in range(start, min(keys, start + BATCH))
            ))
    finally:
        await backend.close()


def load_plain(port: int, keys: int, value: bytes) -> None:
    client = redis.Redis(port=port)
    try:
        for start in range(0, keys, BATCH * 10):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(keys, start + BATCH * 10)):
                pipe.set(f"cb:bench/{i}", value)
            pipe.execute()
    finally:
        client.close()


def measure(workdir: Path, keys: int, value: bytes, corkboard: bool) -> tuple[float, float]:
    proc, port = start_redis(workdir)
    try:
        before = used_memory(port)
        started = time.perf_counter()
        if corkboard:
            asyncio.run(load_corkboard(port, keys, value))
        else:
            load_plain(port, keys, value)
        seconds = time.perf_counter() - started
        return (used_memory(port) - before) / keys, seconds
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, action="append",
                        help="key counts (repeat; default 100000 and 1000000)")
    parser.add_argument("--value-bytes", type=int, default=len(VALUE),
                        help=f"value size (default: the bench value, {len(VALUE)} bytes)")
    args = parser.parse_args()
    sizes = args.keys or [100_000, 1_000_000]
    value = VALUE if args.value_bytes == len(VALUE) else (
        b'"' + b"x" * max(0, args.value_bytes - 2) + b'"'
    )
    print(f"load average {os.getloadavg()[0]:.2f}; value {len(value)} bytes")
    print(f"{'keys':>9}  {'plain SET B/key':>16}  {'Corkboard B/key':>16}  {'ratio':>6}  "
          f"{'load s':>7}")
    with tempfile.TemporaryDirectory(prefix="cb-redis-mem-") as tmp:
        for keys in sizes:
            plain, _ = measure(Path(tmp), keys, value, corkboard=False)
            ours, seconds = measure(Path(tmp), keys, value, corkboard=True)
            print(f"{keys:>9}  {plain:>16.1f}  {ours:>16.1f}  {ours / plain:>5.2f}x  "
                  f"{seconds:>7.1f}", flush=True)
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
