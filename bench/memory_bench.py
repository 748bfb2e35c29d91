"""The memory backend at 10^3 .. 10^6 keys: resident memory per key, and GET/PUT rates at
each size (issue 15, "A million keys in memory").

Each size runs in a fresh Python process (so its RSS holds that size's keys and nothing a
previous size left behind). The process builds a ``MemoryBackend`` exactly as the server
does for ``CORKBOARD_BACKEND=memory`` (``key_history=10``, the default bounds except
``max_keys``, raised so the rate rounds can add keys past 1,000,000), loads N keys
through the backend's own ``kv_put`` and measures:

- RSS (VmRSS) after loading minus RSS before loading, over N: the bytes per key;
- GET: ``kv_get`` of random loaded keys;
- PUT update: ``kv_put`` over random loaded keys (each a second, third ... revision);
- PUT new: ``kv_put`` of keys not loaded yet, at random places in the key order; each
  round's keys are deleted again (untimed) so the size stays N.

The keys are loaded through the backend, not HTTP: 10^6 PUTs through HTTP take minutes
on a 2-core machine and measure the HTTP stack (``kv_bench.py`` does that), while the
memory per key and the cost growing with the key count are the backend's. The rates are
single-coroutine calls (every memory call completes without suspending), so the ratio
between sizes compares one method in one kind of process on the same machine.

    .venv/bin/python bench/memory_bench.py                      # 10^3, 10^5, 10^6
    .venv/bin/python bench/memory_bench.py --sizes 1000,100000 --ops 20000 --rounds 5
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


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def key_name(i: int) -> str:
    """Distinct names whose sorted order is unrelated to ``i`` (inserts land anywhere)."""
    return f"agent/{(i * 2654435761) % 4294967296:08x}/{i}"


async def one_size(n: int, ops: int, rounds: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from app.backends.memory import MemoryBackend
    from app.domain.bounds import Bounds

    backend = MemoryBackend(key_history=10, bounds=Bounds(max_keys=4_000_000))
    keys = backend.keys
    names = [key_name(i) for i in range(n)]
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    for name in names:
        await keys.kv_put(NS, name, VALUE)
    load_s = time.perf_counter() - t0
    gc.collect()
    after = rss_bytes()

    rng = random.Random(n)
    rates: dict[str, list[float]] = {"GET": [], "PUT update": [], "PUT new": []}
    fresh = n
    for _ in range(rounds):
        sample = [rng.choice(names) for _ in range(ops)]
        t0 = time.perf_counter()
        for name in sample:
            await keys.kv_get(NS, name)
        rates["GET"].append(ops / (time.perf_counter() - t0))

        t0 = time.perf_counter()
        for name in sample:
            await keys.kv_put(NS, name, VALUE)
        rates["PUT update"].append(ops / (time.perf_counter() - t0))

        new = [key_name(fresh + i) for i in range(ops)]
        fresh += ops
        t0 = time.perf_counter()
        for name in new:
            await keys.kv_put(NS, name, VALUE)
        rates["PUT new"].append(ops / (time.perf_counter() - t0))
        for name in new:
            await keys.kv_delete(NS, name)
    return {
        "keys": n,
        "rss_before": before,
        "rss_after": after,
        "bytes_per_key": (after - before) / n,
        "load_s": load_s,
        "rates": {op: statistics.median(v) for op, v in rates.items()},
    }


def run_child(n: int, ops: int, rounds: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--one", str(n), "--ops", str(ops), "--rounds", str(rounds)],
        check=True, capture_output=True, text=True, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("CORKBOARD_")},
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000,1000000",
                    help="comma-separated key counts, one fresh process each")
    ap.add_argument("--ops", type=int, default=20_000, help="calls per op and round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per size (median kept)")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json-out", help="also write the results here")
    args = ap.parse_args()
    if args.one is not None:
        print(json.dumps(asyncio.run(one_size(args.one, args.ops, args.rounds))))
        return
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        results.append(run_child(n, args.ops, args.rounds))
        r = results[-1]
        print(f"{n:>9} keys loaded in {r['load_s']:.1f} s", file=sys.stderr)
    base = results[0]["rates"]
    print(f"{'keys':>9} {'RSS MiB':>8} {'+MiB':>6} {'B/key':>7} {'GET/s':>9} {'PUT upd/s':>10} "
          f"{'PUT new/s':>10}  vs {results[0]['keys']} keys (GET, PUT upd, PUT new)")
    for r in results:
        rates = r["rates"]
        ratios = ", ".join(f"{rates[op] / base[op]:.2f}" for op in rates)
        print(f"{r['keys']:>9} {r['rss_after'] / 2**20:>8.0f} "
              f"{(r['rss_after'] - r['rss_before']) / 2**20:>6.0f} "
              f"{r['bytes_per_key']:>7.0f} {rates['GET']:>9.0f} {rates['PUT update']:>10.0f} "
              f"{rates['PUT new']:>10.0f}  {ratios}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
