"""The fan-out benchmark's writers, run in a process of their own.

``fanout_bench.py`` starts this script for each measured phase, so that its 1,000
watcher sockets (every event parsed in Python) never delay a write or its answer: in
one process they shared an event loop, and a write waited behind the watchers' reads
after every delivery. Both processes stamp with ``time.monotonic_ns()`` (the system's
monotonic clock), so the watchers still compute write-to-delivery latency on one clock.

    python bench/fanout_writer.py --port P --kind corkboard --rate 200 --writes 2000 \
        --writers 4

Connection k sends writes k, k+n, k+2n, ... each at its slot of one schedule
(``start + i / rate``), one at a time. It prints one JSON line: the seconds the
schedule took, the writes sent, and the process's CPU seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import re
import resource
import sys
import time
from collections.abc import Callable

LOOPBACK = "127.0.0.1"
NS = "fanout"
KEY = "fan/k"


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def corkboard_write(stamp: int) -> tuple[str, bytes]:
    return f"PUT /v1/kv/{KEY}?ns={NS}", b'{"t":%d}' % stamp


def etcd_write(stamp: int) -> tuple[str, bytes]:
    value = _b64(json.dumps({"t": stamp}))
    return "POST /v3/kv/put", json.dumps({"key": _b64(KEY), "value": value}).encode()


WRITES: dict[str, Callable[[int], tuple[str, bytes]]] = {
    "corkboard": corkboard_write,
    "etcd": etcd_write,
}


class Writer:
    """A keep-alive HTTP/1.1 connection sending one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(LOOPBACK, self.port)

    async def request(self, head: str, body: bytes) -> int:
        self.writer.write(
            f"{head} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        )
        raw = await self.reader.readuntil(b"\r\n\r\n")
        status = int(raw[9:12])
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", raw)
        if length is not None:
            await self.reader.readexactly(int(length.group(1)))
        else:  # chunked
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        return status

    def close(self) -> None:
        self.writer.close()


async def run_schedule(port: int, kind: str, rate: float, writes: int, writers: int
                       ) -> dict[str, float]:
    write = WRITES[kind]
    conns = [Writer(port) for _ in range(writers)]
    for conn in conns:
        await conn.open()
    start = time.monotonic()

    async def write_every(conn: Writer, first: int) -> None:
        for i in range(first, writes, len(conns)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            status = await conn.request(*write(time.monotonic_ns()))
            if status >= 300:
                raise RuntimeError(f"write {i} answered {status}")

    try:
        await asyncio.gather(*(write_every(c, k) for k, c in enumerate(conns)))
    finally:
        for conn in conns:
            conn.close()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {"elapsed_s": time.monotonic() - start, "writes": writes,
            "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--kind", choices=sorted(WRITES), required=True)
    p.add_argument("--rate", type=float, required=True)
    p.add_argument("--writes", type=int, required=True)
    p.add_argument("--writers", type=int, default=1)
    args = p.parse_args()
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run  # type: ignore[assignment]
    result = runner(run_schedule(args.port, args.kind, args.rate, args.writes, args.writers))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
