"""The CPU an access line costs a worker: ``AccessLog`` formatting, against the plain form.

    .venv/bin/python bench/access_log_bench.py
    .venv/bin/python bench/access_log_bench.py --lines 200000 --rounds 5

A worker formats its access lines when it writes its buffer (``AccessLog.flush``: 512 at
a time, every 200 ms and at shutdown), not on a request's path, but in the same process:
every microsecond a line takes is a microsecond a request does not get. This formats
``--lines`` lines shaped like kv_bench.py's GETs (one request every 33 us, durations of
5-40 us, no query, no token) in batches of 512, as ``flush`` does, and reports the
microseconds per line of the app's formatting (``AccessLog._lines``) and of the plain form
it replaces, orjson of the line's entry dict (``AccessLog._entry``; the two give the same
bytes, tests/test_hot_formats.py). Rounds alternate the two; the median round is
reported, and the ratio within each round. Writing the lines is not included (under
load, 0.15 us a line into a file: bench/README.md).
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson

from app.observability import AccessLog

BATCH = 512


def items(n: int) -> list[tuple[Any, ...]]:
    rng = random.Random(15)
    start = time.time_ns()
    return [
        (start + i * 33_000, f"4ffd45b2a1c0-{i:x}", "GET", "/v1/kv/benchkey", b"",
         "/v1/kv/{key}", 200, rng.uniform(5e-6, 4e-5), 215, None)
        for i in range(n)
    ]


def per_line(format_lines: Callable[[list[tuple[Any, ...]]], bytes],
             lines: list[tuple[Any, ...]]) -> float:
    """Microseconds of CPU per line, formatting batches as ``flush`` does."""
    t0 = time.process_time()
    for start in range(0, len(lines), BATCH):
        format_lines(lines[start:start + BATCH])
    return (time.process_time() - t0) / len(lines) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    log = AccessLog(io.BytesIO())  # never flushed: nothing is written

    def plain(batch: list[tuple[Any, ...]]) -> bytes:
        return b"".join([orjson.dumps(log._entry(item), option=orjson.OPT_APPEND_NEWLINE)
                         for item in batch])

    lines = items(args.lines)
    per_line(log._lines, lines[:BATCH * 4])  # the time formats' cache, warm
    app_us: list[float] = []
    plain_us: list[float] = []
    for _ in range(args.rounds):
        plain_us.append(per_line(plain, lines))
        app_us.append(per_line(log._lines, lines))
    ratios = [a / p for a, p in zip(app_us, plain_us, strict=True)]
    print(f"access_log_bench: {args.lines} lines x {args.rounds} rounds, load "
          f"{os.getloadavg()[0]:.2f}; CPython {sys.version.split()[0]}")
    print(f"  plain (orjson of the entry dict)  {statistics.median(plain_us):6.3f} us a line "
          f"({min(plain_us):.3f}-{max(plain_us):.3f})")
    print(f"  app (AccessLog._lines)            {statistics.median(app_us):6.3f} us a line "
          f"({min(app_us):.3f}-{max(app_us):.3f})")
    print(f"  app / plain, per round: median {statistics.median(ratios):.2f}x "
          f"({min(ratios):.2f}-{max(ratios):.2f})")


if __name__ == "__main__":
    main()
