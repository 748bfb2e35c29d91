"""Instructions per key write and read in the whole server process: uvicorn included.

    .venv/bin/python bench/server_instructions.py                       # memory
    .venv/bin/python bench/server_instructions.py --backend redis --app-dir /tmp/old --app-dir .

``hotpath_instructions.py`` counts the app alone, driven in process; what uvicorn's
HTTP protocol (app/serving.py) and the Redis connection's reads and writes cost is not
in it. Here ``corkboard serve`` itself (one worker, the README's way to run it) runs
under ``valgrind --tool=callgrind --instr-atstart=no``, on the memory backend or on a
``redis-server`` of its own on a free loopback port. A client in this process sends,
on one kept-alive connection, one request at a time: 300 PUTs and 300 GETs of warm-up,
then ``--count`` PUTs of the bench value to ``/v1/kv/benchkey`` and ``--count`` GETs of
it, with ``callgrind_control`` switching the count on for each phase and dumping it
after. A figure is a phase's instructions over ``--count``: the server's user-space
work for one call, one call at a time (so one Redis script call per exchange, no
batching). The kernel's share and the Redis server's own work are not in it; valgrind
counts the same for the same build, whatever else the machine is doing (the deadline
sweeper and the access log's flush run by the clock: a few hundred instructions a call).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import LOOPBACK, ProcessSet, add_comparison_args, comparison_runs, free_port

VALUE = b'{"status":"running","step":42,"agent":"a1"}'
WARMUP = 300
REQUESTS = {
    "PUT": b"PUT /v1/kv/benchkey HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
           b"\r\nContent-Length: %d\r\n\r\n%b" % (len(VALUE), VALUE),
    "GET": b"GET /v1/kv/benchkey HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
}


def calls(sock: socket.socket, op: str, count: int) -> None:
    """``count`` requests, each answered (2xx, the whole body read) before the next."""
    request = REQUESTS[op]
    for _ in range(count):
        sock.sendall(request)
        buffer = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise SystemExit(f"the server closed the connection during a {op}")
            buffer += chunk
            head, sep, body = buffer.partition(b"\r\n\r\n")
            if not sep:
                continue
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
            if length and len(body) >= int(length.group(1)):
                break
        if not head.startswith(b"HTTP/1.1 2"):
            raise SystemExit(f"{op} answered {head.split(b' ', 2)[1].decode()}")


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def start_under_callgrind(
    app_dir: Path, backend_url: str, out: Path, env_extra: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], socket.socket]:
    """``corkboard serve`` (one worker) under callgrind with counting off, and a client
    connection to it once it listens. Its dumps go to ``<out>.<pid>[.n]``."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORKBOARD_")}
    env["CORKBOARD_SWEEP_INTERVAL_SECONDS"] = "5"  # (its slowest: see hotpath_instructions)
    env.update(env_extra or {})
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no",
         f"--callgrind-out-file={out}.%p", sys.executable, "-m", "app.cli", "serve",
         "--host", LOOPBACK, "--port", str(port), "--workers", "1", "--backend", backend_url],
        cwd=app_dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300  # a cold start under valgrind takes a while
    while True:
        try:
            return server, socket.create_connection((LOOPBACK, port), timeout=60)
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.terminate()
                server.wait(60)
                raise SystemExit("the server did not start under valgrind") from None
            time.sleep(0.5)


def dumped_totals(out: Path) -> dict[str, int]:
    """Instructions counted in each ``callgrind_control --dump=<name>`` of the server
    started with ``out``: name -> total."""
    totals = {}
    for dump in out.parent.glob(f"{out.name}.*"):
        text = dump.read_text()
        trigger = re.search(r"^desc: Trigger: dump (\w+)", text, re.MULTILINE)
        total = re.search(r"^totals: (\d+)", text, re.MULTILINE)
        if trigger and total:
            totals[trigger.group(1)] = int(total.group(1))
    return totals


def require_callgrind() -> None:
    for tool in ("valgrind", "callgrind_control"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH (Debian package: valgrind)")


def measure(app_dir: Path, backend_url: str, count: int, tmp: Path) -> dict[str, float]:
    out = tmp / f"server-{time.monotonic_ns()}"
    server, sock = start_under_callgrind(app_dir, backend_url, out)
    try:
        with sock:
            for op in ("PUT", "GET"):
                calls(sock, op, WARMUP)
            for op in ("PUT", "GET"):
                control(server.pid, "--instr=on")
                calls(sock, op, count)
                control(server.pid, "--instr=off")
                control(server.pid, f"--dump={op}")
        return {op: total / count for op, total in dumped_totals(out).items()}
    finally:
        server.terminate()
        server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_comparison_args(parser, count=2000)
    args = parser.parse_args()
    require_callgrind()
    with tempfile.TemporaryDirectory(prefix="cb-server-") as tmp, ProcessSet(Path(tmp)) as procs:
        for backend, app_dir, url in comparison_runs(args, procs, tmp):
            per_op = measure(app_dir, url, args.count, Path(tmp))
            figures = ", ".join(f"{op} {per_op[op]:,.0f}" for op in ("PUT", "GET"))
            print(f"{backend} {app_dir}: instructions per call in the server process: "
                  f"{figures}", flush=True)


if __name__ == "__main__":
    main()
