"""The memory backend at 10^3 .. 10^6 keys: resident memory per key, and GET/PUT rates at
each size (issue 15, "A million keys in memory").

Each backend is a ``MemoryBackend`` built as the server builds it for
``CORKBOARD_BACKEND=memory`` (``key_history=10``, the default bounds except ``max_keys``,
raised so the rate rounds can add keys past 1,000,000), loaded with N keys (random-looking
names, the value of kv_bench.py) through the backend's own ``kv_put``, with the garbage
collector's thresholds the server sets (``CORKBOARD_GC_THRESHOLD``, default 10,000).

- Memory: each size in a fresh Python process: RSS (VmRSS) after loading minus RSS
  before, over N, is the bytes per key; also the time of one full ``gc.collect()`` and
  the number of objects the collector tracks.
- Rates: one process holds a backend of every size and runs their rounds interleaved
  (so the ratio between sizes compares one method in one process, and load changes on a
  shared machine touch every size alike); the median round is reported. Per round:
  GET is ``kv_get`` of random loaded keys; PUT update is ``kv_put`` over the same random
  keys (a new revision); PUT new is ``kv_put`` of keys not loaded, at random places in
  the key order (deleted again, untimed, so the size stays N). Before the rounds every
  backend has a full change log (100,000 events), as a server has after that many writes.
  Rates are per second of this process's CPU time (see ``CLOCK``).

The keys are loaded through the backend, not HTTP: 10^6 PUTs through HTTP take minutes
on a 2-core machine and measure the HTTP stack (``kv_bench.py`` does that), while the
memory per key and the cost growing with the key count are the backend's. The rates are
single-coroutine calls (every memory call completes without suspending).

    .venv/bin/python bench/memory_bench.py                      # 10^3, 10^5, 10^6
    .venv/bin/python bench/memory_bench.py --sizes 1000,100000 --ops 5000 --only rates
    git archive main app | tar -x -C /tmp/old && \
        .venv/bin/python bench/memory_bench.py --sizes 1000,100000 --app-dir /tmp/old
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The value kv_bench.py writes (a small JSON object of 45 bytes).
VALUE = b'{"status":"running","step":42,"agent":"a1"}'
NS = "bench"
#: The rates' clock: this process's CPU time. The calls never wait (no I/O, no await that
#: suspends), so on an idle machine it equals the wall clock; on a shared one it leaves
#: out the time other processes had the core (--wall-clock: time.perf_counter).
CLOCK = time.process_time


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def key_name(i: int) -> str:
    """Distinct names whose sorted order is unrelated to ``i`` (inserts land anywhere)."""
    return f"agent/{(i * 2654435761) % 4294967296:08x}/{i}"


def server_gc() -> None:
    """The collector's thresholds as the server sets them (CORKBOARD_GC_THRESHOLD)."""
    try:
        from app.settings import Settings
    except ImportError:
        return
    field = Settings.model_fields.get("gc_threshold")
    if field is not None and field.default:
        gc.set_threshold(field.default, 10, 10)


def new_backend() -> Any:
    from app.backends.memory import MemoryBackend
    from app.domain.bounds import Bounds

    return MemoryBackend(key_history=10, bounds=Bounds(max_keys=4_000_000))


async def load(backend: Any, n: int) -> list[str]:
    names = [key_name(i) for i in range(n)]
    for name in names:
        await backend.keys.kv_put(NS, name, VALUE)
    return names


async def rss_of(n: int) -> dict[str, Any]:
    """In a fresh process: RSS before and after loading ``n`` keys, and a full GC's time."""
    backend = new_backend()
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    await load(backend, n)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    gc.collect()
    gc_ms = (time.perf_counter() - t0) * 1000
    after = rss_bytes()
    return {"keys": n, "rss_before": before, "rss_after": after,
            "bytes_per_key": (after - before) / n, "load_s": load_s, "gc_ms": gc_ms,
            "gc_tracked": len(gc.get_objects())}


class Sized:
    """One backend holding ``n`` keys, and its rate samples."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.backend = new_backend()
        self.names: list[str] = []
        self.fresh = n
        self.rng = random.Random(n)
        self.rates: dict[str, list[float]] = {"GET": [], "PUT update": [], "PUT new": []}

    async def setup(self) -> None:
        self.names = await load(self.backend, self.n)
        # Every size runs with a full change log (as a server does after 100,000 writes),
        # so each PUT also drops the oldest event at every size.
        retention = self.backend.bounds.event_retention
        for i in range(max(0, retention - self.n)):
            await self.backend.keys.kv_put(NS, self.names[i % self.n], VALUE)

    async def round(self, ops: int) -> None:
        keys = self.backend.keys
        sample = [self.rng.choice(self.names) for _ in range(ops)]
        t0 = CLOCK()
        for name in sample:
            await keys.kv_get(NS, name)
        self.rates["GET"].append(ops / (CLOCK() - t0))

        t0 = CLOCK()
        for name in sample:
            await keys.kv_put(NS, name, VALUE)
        self.rates["PUT update"].append(ops / (CLOCK() - t0))

        new = [key_name(self.fresh + i) for i in range(ops)]
        self.fresh += ops
        t0 = CLOCK()
        for name in new:
            await keys.kv_put(NS, name, VALUE)
        self.rates["PUT new"].append(ops / (CLOCK() - t0))
        for name in new:
            await keys.kv_delete(NS, name)


async def rates_of(sizes: list[int], ops: int, rounds: int) -> list[dict[str, Any]]:
    """In one process: a backend per size, their rounds interleaved (size A, B, C, A, B,
    C ...) so that a change in the machine's load touches every size alike."""
    backends = [Sized(n) for n in sizes]
    for b in backends:
        await b.setup()
    gc.collect()
    for _ in range(rounds):
        for b in backends:
            await b.round(ops)
    return [{"keys": b.n, "rates": {op: statistics.median(v) for op, v in b.rates.items()},
             "samples": b.rates} for b in backends]


def run_child(args: list[str]) -> Any:
    out = subprocess.run(
        [sys.executable, __file__, *args], check=True, capture_output=True, text=True,
        cwd=ROOT, env={k: v for k, v in os.environ.items() if not k.startswith("CORKBOARD_")},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000,1000000",
                    help="comma-separated key counts")
    ap.add_argument("--ops", type=int, default=20_000, help="calls per op and round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per size (median kept)")
    ap.add_argument("--only", choices=["rss", "rates"], help="one of the two parts")
    ap.add_argument("--child", choices=["rss", "rates"], help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help="also write the results here")
    ap.add_argument("--wall-clock", action="store_true",
                    help="time the rates by the wall clock instead of the CPU time")
    ap.add_argument("--app-dir", default=str(ROOT),
                    help="the directory holding the app/ package to measure (default: this "
                         "checkout), e.g. an export of an older commit")
    args = ap.parse_args()
    sys.path.insert(0, args.app_dir)
    if args.wall_clock:
        global CLOCK
        CLOCK = time.perf_counter
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        server_gc()
    if args.child == "rss":
        print(json.dumps(asyncio.run(rss_of(sizes[0]))))
        return
    if args.child == "rates":
        print(json.dumps(asyncio.run(rates_of(sizes, args.ops, args.rounds))))
        return
    out: dict[str, Any] = {}
    if args.only in (None, "rss"):
        out["rss"] = [run_child(["--child", "rss", "--sizes", str(n), "--app-dir", args.app_dir])
                      for n in sizes]
        print(f"{'keys':>9} {'RSS MiB':>8} {'+MiB':>6} {'B/key':>6} {'load s':>7} "
              f"{'full GC ms':>10} {'GC objects':>10}")
        for r in out["rss"]:
            print(f"{r['keys']:>9} {r['rss_after'] / 2**20:>8.0f} "
                  f"{(r['rss_after'] - r['rss_before']) / 2**20:>6.0f} "
                  f"{r['bytes_per_key']:>6.0f} {r['load_s']:>7.1f} {r['gc_ms']:>10.0f} "
                  f"{r['gc_tracked']:>10}")
    if args.only in (None, "rates"):
        out["rates"] = run_child(["--child", "rates", "--sizes", args.sizes, "--app-dir",
                                  args.app_dir, "--ops", str(args.ops), "--rounds",
                                  str(args.rounds), *(["--wall-clock"] * args.wall_clock)])
        base = out["rates"][0]["rates"]
        print(f"{'keys':>9} {'GET/s':>9} {'PUT upd/s':>10} {'PUT new/s':>10}  "
              f"vs {sizes[0]} keys (GET, PUT upd, PUT new)")
        for r in out["rates"]:
            rates = r["rates"]
            ratios = ", ".join(f"{rates[op] / base[op]:.2f}x" for op in rates)
            print(f"{r['keys']:>9} {rates['GET']:>9.0f} {rates['PUT update']:>10.0f} "
                  f"{rates['PUT new']:>10.0f}  {ratios}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
