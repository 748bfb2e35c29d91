"""The memory backend at 10^3 .. 10^6 keys: resident memory per key, and GET/PUT rates at
each size (issue 15, "A million keys in memory").

Each backend is a ``MemoryBackend`` built as the server builds it for
``CORKBOARD_BACKEND=memory`` (``key_history=10``, the default bounds except ``max_keys``,
raised so the rate rounds can add keys past 1,000,000), loaded with N keys (random-looking
names, the value of kv_bench.py made as a PUT request makes it) through the backend's
own ``kv_put``, with the garbage collector's thresholds the server sets
(``CORKBOARD_GC_THRESHOLD``, default 10,000).

- Memory: each size in a fresh Python process: RSS (VmRSS) after loading minus RSS
  before, over N, is the bytes per key; also the time of one full ``gc.collect()`` and
  the number of objects the collector tracks.
- Rates: one process holds a backend of every size and runs their rounds interleaved
  (so the ratio between sizes compares one method in one process, and load changes on a
  shared machine touch every size alike); the median round is reported, and after
  the ';' the median of each round's ratio to the first size (``paired_ratios``). Per round:
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
#: The bench's parts: memory per key; backend call rates; app (ASGI) request rates.
PARTS = ["rss", "rates", "app"]


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
    """Put ``n`` keys, each value made from the request body as a PUT /v1/kv/{key} makes
    it (``value_from_body``: parsed, then encoded by orjson into a buffer of its own)."""
    from app.routers.kv import value_from_body

    names = [key_name(i) for i in range(n)]
    for name in names:
        await backend.keys.kv_put(NS, name, value_from_body(VALUE, "application/json", 1 << 20))
    return names


async def rss_of(n: int) -> dict[str, Any]:
    """In a fresh process: RSS before and after loading ``n`` keys, and a full GC's time."""
    backend = new_backend()
    import app.routers.kv  # noqa: F401  (load's import, here so that RSS "before" has it)

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


class AppCaller:
    """The service's ASGI app (``create_app`` with the defaults, memory backend, access
    log and metrics on; ``max_keys`` raised as for the backend), its lifespan run,
    called directly: no socket, no HTTP parsing, so the figure is the app and the
    backend at that size."""

    def __init__(self) -> None:
        from app.main import create_app
        from app.settings import Settings

        self.app = create_app(Settings(namespace_max_keys=4_000_000))
        self.state: dict[str, Any] = {}
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Any:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self.task = asyncio.create_task(self.app(scope, self.inbox.get, self.outbox.put))
        await self.inbox.put({"type": "lifespan.startup"})
        started = await self.outbox.get()
        assert started["type"] == "lifespan.startup.complete", started
        return self.state["backend"]

    async def stop(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        await self.outbox.get()
        assert self.task is not None
        await self.task

    async def call(self, method: str, path: str, body: bytes = b"") -> int:
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "method": method, "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"ns=" + NS.encode(), "root_path": "",
            "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
            "state": dict(self.state),
        }
        messages = [{"type": "http.request", "body": body, "more_body": False}]
        status = 0

        async def receive() -> dict[str, Any]:
            return messages.pop() if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        return status


class Sized:
    """One backend holding ``n`` keys (served by the app with ``app``), and its rates."""

    def __init__(self, n: int, app: bool = False) -> None:
        self.n = n
        self.caller = AppCaller() if app else None
        self.backend: Any = None if app else new_backend()
        self.names: list[str] = []
        self.fresh = n
        self.rng = random.Random(n)
        self.rates: dict[str, list[float]] = {"GET": [], "PUT update": [], "PUT new": []}

    async def setup(self) -> None:
        if self.caller is not None:
            self.backend = await self.caller.start()
        self.names = await load(self.backend, self.n)
        # Every size runs with a full change log (as a server does after 100,000 writes),
        # so each PUT also drops the oldest event at every size.
        retention = self.backend.bounds.event_retention
        for i in range(max(0, retention - self.n)):
            await self.backend.keys.kv_put(NS, self.names[i % self.n], VALUE)

    async def get(self, name: str) -> None:
        if self.caller is None:
            await self.backend.keys.kv_get(NS, name)
        elif await self.caller.call("GET", "/v1/kv/" + name) != 200:
            raise RuntimeError(f"GET {name} failed")

    async def put(self, name: str) -> None:
        if self.caller is None:
            await self.backend.keys.kv_put(NS, name, VALUE)
        elif await self.caller.call("PUT", "/v1/kv/" + name, VALUE) not in (200, 201):
            raise RuntimeError(f"PUT {name} failed")

    async def timed(self, op: str, names: list[str], call: Any) -> None:
        t0 = CLOCK()
        for i, name in enumerate(names):
            await call(name)
            if self.caller is not None and i % 100 == 99:
                await asyncio.sleep(0)  # the app's own tasks (the access log's writer)
        self.rates[op].append(len(names) / (CLOCK() - t0))

    async def round(self, ops: int) -> None:
        sample = [self.rng.choice(self.names) for _ in range(ops)]
        await self.timed("GET", sample, self.get)
        await self.timed("PUT update", sample, self.put)
        new = [key_name(self.fresh + i) for i in range(ops)]
        self.fresh += ops
        await self.timed("PUT new", new, self.put)
        for name in new:
            await self.backend.keys.kv_delete(NS, name)


async def rates_of(sizes: list[int], ops: int, rounds: int, app: bool) -> list[dict[str, Any]]:
    """In one process: a backend per size, their rounds interleaved (size A, B, C, A, B,
    C ...) so that a change in the machine's load touches every size alike."""
    backends = [Sized(n, app) for n in sizes]
    for b in backends:
        await b.setup()
    gc.collect()
    for _ in range(rounds):
        for b in backends:
            await b.round(ops)
    for b in backends:
        if b.caller is not None:
            await b.caller.stop()
    return [{"keys": b.n, "rates": {op: statistics.median(v) for op, v in b.rates.items()},
             "samples": b.rates} for b in backends]


def paired_ratios(base: dict[str, Any], sized: dict[str, Any]) -> dict[str, float]:
    """Per op, the median over rounds of (this size's rate / the first size's rate in the
    same round): the two ran within a second of each other, so a change in the machine's
    load between rounds cancels out, which the ratio of the two medians does not."""
    return {op: statistics.median(b / a for a, b in zip(base["samples"][op], runs, strict=True))
            for op, runs in sized["samples"].items()}


def run_child(args: list[str]) -> Any:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("CORKBOARD_")},
    )
    if out.returncode:
        sys.exit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,100000,1000000",
                    help="comma-separated key counts")
    ap.add_argument("--ops", type=int, default=20_000, help="calls per op and round")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per size (median kept)")
    ap.add_argument("--only", choices=PARTS, help="one part: rss, backend or app rates")
    ap.add_argument("--app-ops", type=int, default=5_000,
                    help="requests per op and round for the app rates")
    ap.add_argument("--child", choices=PARTS, help=argparse.SUPPRESS)
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
    if args.child:
        print(json.dumps(asyncio.run(rates_of(sizes, args.ops, args.rounds,
                                              app=args.child == "app"))))
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
    for part, ops in (("rates", args.ops), ("app", args.app_ops)):
        if args.only not in (None, part):
            continue
        out[part] = run_child(["--child", part, "--sizes", args.sizes, "--app-dir",
                               args.app_dir, "--ops", str(ops), "--rounds", str(args.rounds),
                               *(["--wall-clock"] * args.wall_clock)])
        base = out[part][0]["rates"]
        print(f"{part:>9} {'GET/s':>9} {'PUT upd/s':>10} {'PUT new/s':>10}  "
              f"vs {sizes[0]} keys (GET, PUT upd, PUT new); paired rounds")
        for r in out[part]:
            rates = r["rates"]
            ratios = ", ".join(f"{rates[op] / base[op]:.2f}x" for op in rates)
            paired = ", ".join(f"{x:.2f}x" for x in paired_ratios(out[part][0], r).values())
            print(f"{r['keys']:>9} {rates['GET']:>9.0f} {rates['PUT update']:>10.0f} "
                  f"{rates['PUT new']:>10.0f}  {ratios}; {paired}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
