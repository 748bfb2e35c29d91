"""What a new key costs at 10^6 keys, piece by piece: the ordered name index against the
rest of a PUT (issue 15's "PUT at 10^6 keys vs 10^3").

    .venv/bin/python bench/index_cost.py                 # both parts
    .venv/bin/python bench/index_cost.py --only parts --huge-pages

``memory_bench.py`` times whole requests; this splits them. Each part runs in one
process, rounds interleaved, medians reported (microseconds per call, this process's
CPU time except where noted):

- ``app``: ``PUT /v1/kv/{new key}`` through the ASGI app (as ``memory_bench.py``'s app
  rounds: defaults, the access log's lines written to /dev/null here so that they do not
  flood the terminal), at 10^3 and 10^6 keys, with the namespace's ordered index as it
  is (``index``) and with it replaced by a stand-in whose ``add`` and ``discard`` do
  nothing (``no index``): the difference is what the index costs inside a request.
  Never a way to run the server: listings need the index.
- ``parts``: at 10^6 names (and 10^3), ``SortedList.add`` of a new name and a dict lookup
  of an existing key by a fresh string, as a request brings it (wall clock). With
  ``--huge-pages`` the heap is first collapsed into 2 MiB pages (``madvise`` with
  ``MADV_COLLAPSE``, Linux 6.1+), to tell cache misses from TLB misses.

``--load N`` sets the index's sublist load factor in both parts (sortedcontainers'
default is 1,000: sublists of 1,000-2,000 names).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import memory_bench as mb  # bench/ is not a package: it runs as a script

MADV_COLLAPSE = 25
HUGE_PAGE = 2 << 20


class NoIndex:
    """The ordered index's write calls, doing nothing (the ``app`` part's control)."""

    def add(self, name: str) -> None:
        pass

    def discard(self, name: str) -> None:
        pass


def collapse_heap() -> int:
    """Collapse this process's private writable mappings into huge pages; MiB done."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    done = 0
    with open("/proc/self/maps") as f:
        for line in f:
            fields = line.split()
            if fields[1] != "rw-p" or (len(fields) > 5 and fields[5] != "[heap]"):
                continue
            low, high = (int(x, 16) for x in fields[0].split("-"))
            start, end = (low + HUGE_PAGE - 1) & -HUGE_PAGE, high & -HUGE_PAGE
            if end - start >= HUGE_PAGE and libc.madvise(start, end - start, MADV_COLLAPSE) == 0:
                done += end - start
    return done >> 20


def fresh(name: str) -> str:
    """A new string equal to ``name`` (a request's key is never the stored object)."""
    return "".join([name[:3], name[3:]])


async def app_part(rounds: int, ops: int, load: int | None) -> dict[str, list[float]]:
    sized = [mb.Sized(1000, True), mb.Sized(1_000_000, True)]
    for s in sized:
        await s.setup()
        if load is not None:
            s.backend.store.ns(mb.NS).order._reset(load)
    for s in sized:
        if s.caller is not None and s.caller.app.access_log is not None:
            s.caller.app.access_log.stream = open(os.devnull, "wb")
    results: dict[str, list[float]] = {}
    for _ in range(rounds):
        for s in sized:
            st = s.backend.store.ns(mb.NS)
            index = st.order
            for label, stand_in in (("index", index), ("no index", NoIndex())):
                st.order = stand_in
                names = [mb.key_name(s.fresh + i) for i in range(ops)]
                s.fresh += ops
                t0 = time.process_time()
                for i, name in enumerate(names):
                    await s.put(name)
                    if i % 100 == 99:
                        await asyncio.sleep(0)
                elapsed = time.process_time() - t0
                results.setdefault(f"PUT new, {s.n} keys, {label}", []).append(elapsed / ops * 1e6)
                st.order = index
                for name in names:
                    await s.backend.keys.kv_delete(mb.NS, name)
    return results


def parts_part(rounds: int, ops: int, huge_pages: bool, load: int | None
               ) -> dict[str, list[float]]:
    from sortedcontainers import SortedList

    results: dict[str, list[float]] = {}
    for n in (1000, 1_000_000):
        names = [mb.key_name(i) for i in range(n)]
        rows = {name: name.encode() for name in names}
        index: Any = SortedList(names)
        if load is not None:
            index._reset(load)
        if huge_pages:
            print(f"{n} names: {collapse_heap()} MiB collapsed into huge pages", file=sys.stderr)
        rng = random.Random(n)
        for r in range(rounds):
            new = [fresh(mb.key_name(n + r * ops + i)) for i in range(ops)]
            old = [fresh(name) for name in rng.sample(names, min(ops, n))]
            t0 = time.perf_counter()
            for name in new:
                index.add(name)
            results.setdefault(f"SortedList.add, {n} names", []).append(
                (time.perf_counter() - t0) / len(new) * 1e6)
            t0 = time.perf_counter()
            for name in old:
                rows.get(name)
            results.setdefault(f"dict lookup, {n} keys", []).append(
                (time.perf_counter() - t0) / len(old) * 1e6)
            for name in new:
                index.remove(name)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["app", "parts"], help="one part (default: both)")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--ops", type=int, default=3000, help="calls per round and size")
    parser.add_argument("--huge-pages", action="store_true", help="parts: MADV_COLLAPSE first")
    parser.add_argument("--load", type=int, help="the index's sublist load factor "
                        "(SortedList._reset; default: sortedcontainers' 1,000)")
    args = parser.parse_args()
    mb.server_gc()
    results: dict[str, list[float]] = {}
    if args.only in (None, "app"):
        results.update(asyncio.run(app_part(args.rounds, args.ops, args.load)))
    if args.only in (None, "parts"):
        results.update(parts_part(args.rounds, max(args.ops, 20_000), args.huge_pages, args.load))
    for name, samples in results.items():
        print(f"{name:40} {statistics.median(samples):8.2f} us   "
              f"({min(samples):.2f}-{max(samples):.2f} over {len(samples)} rounds)")


if __name__ == "__main__":
    main()
