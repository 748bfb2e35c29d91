"""Instructions per delivered event in the whole server process: N watch streams, one
write at a time.

    .venv/bin/python bench/fanout_instructions.py                          # memory, 100 watchers
    .venv/bin/python bench/fanout_instructions.py --app-dir /tmp/old --app-dir . --backend redis

``fanout_bench.py`` times a thousand watchers on the wall clock, which a shared 2-core
machine blurs by a fifth from run to run. Here ``corkboard serve`` (one worker) runs
under ``valgrind --tool=callgrind --instr-atstart=no`` as in ``server_instructions.py``,
with ``--watchers`` streams open on ``GET /v1/watch?pattern=benchkey``. After a warm-up,
the count is switched on for ``--count`` PUTs of ``/v1/kv/benchkey``, each sent once
every watcher has received the one before: each event is one send to each stream, as on
a quiet server. A figure is the phase's instructions over the deliveries (writes times
watchers); the write's own work is in it, shared by the watchers (``server_instructions``
gives it alone). Valgrind counts the same for the same build whatever else the machine
does; the kernel's work (a send's system call) is not in it.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import LOOPBACK, ProcessSet, add_comparison_args, comparison_runs
from server_instructions import (
    calls,
    control,
    dumped_totals,
    require_callgrind,
    start_under_callgrind,
)

WATCH = b"GET /v1/watch?pattern=benchkey HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
EVENT = b"event: kv.put\n"
WARMUP = 50


class Watchers:
    """Open streams, read without blocking; ``wait(n)`` until each has seen n events."""

    def __init__(self, port: int, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.seen: dict[socket.socket, int] = {}
        self.tail: dict[socket.socket, bytes] = {}
        for _ in range(count):
            sock = socket.create_connection((LOOPBACK, port), timeout=60)
            sock.sendall(WATCH)
            head = b""
            while b": corkboard watch" not in head:
                chunk = sock.recv(65536)
                if not chunk:
                    raise SystemExit("a watch stream closed before it opened")
                head += chunk
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.seen[sock] = head.count(EVENT)
            self.tail[sock] = b""

    def wait(self, n: int, timeout: float = 600) -> None:
        deadline = time.monotonic() + timeout
        behind = {s for s, seen in self.seen.items() if seen < n}
        while behind:
            if time.monotonic() > deadline:
                raise SystemExit(f"{len(behind)} watchers did not receive event {n}")
            for key, _ in self.selector.select(timeout=1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                data = self.tail[sock] + sock.recv(1 << 20)
                self.seen[sock] += data.count(EVENT)
                self.tail[sock] = data[-len(EVENT) + 1 :]
                if self.seen[sock] >= n:
                    behind.discard(sock)

    def close(self) -> None:
        for sock in self.seen:
            sock.close()
        self.selector.close()


def measure(app_dir: Path, backend_url: str, count: int, watchers: int, tmp: Path
            ) -> float:
    out = tmp / f"fanout-{time.monotonic_ns()}"
    server, sock = start_under_callgrind(
        app_dir, backend_url, out, {"CORKBOARD_MAX_WATCHERS": str(max(10_000, watchers))}
    )
    streams = None
    try:
        with sock:
            port = sock.getpeername()[1]
            streams = Watchers(port, watchers)
            for i in range(1, WARMUP + 1):
                calls(sock, "PUT", 1)
                streams.wait(i)
            control(server.pid, "--instr=on")
            for i in range(WARMUP + 1, WARMUP + count + 1):
                calls(sock, "PUT", 1)
                streams.wait(i)
            control(server.pid, "--instr=off")
            control(server.pid, "--dump=fanout")
        total = dumped_totals(out).get("fanout")
        if total is None:
            raise SystemExit("callgrind wrote no dump")
        return total / (count * watchers)
    finally:
        if streams is not None:
            streams.close()
        server.terminate()
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_comparison_args(parser, count=100)
    parser.add_argument("--watchers", type=int, default=100, help="open watch streams")
    args = parser.parse_args()
    require_callgrind()
    with tempfile.TemporaryDirectory(prefix="cb-fanout-") as tmp, ProcessSet(Path(tmp)) as procs:
        for backend, app_dir, url in comparison_runs(args, procs, tmp):
            per = measure(app_dir, url, args.count, args.watchers, Path(tmp))
            print(f"{backend} {app_dir}: {args.watchers} watchers, {args.count} writes: "
                  f"{per:,.0f} instructions per delivered event in the server process",
                  flush=True)


if __name__ == "__main__":
    main()
