"""Instructions per key read and write inside the app: figures a busy machine cannot move.

    .venv/bin/python bench/hotpath_instructions.py                  # this checkout, memory
    .venv/bin/python bench/hotpath_instructions.py --backend memory --backend redis
    .venv/bin/python bench/hotpath_instructions.py --app-dir /tmp/old --app-dir .

Throughput ratios (kv_bench.py) need a quiet machine; this does not. The ASGI app,
built by ``create_app`` with its defaults (access log on, metrics, access layer, hot
path) on the memory backend or on Redis (a ``redis-server`` of its own on a free
loopback port), is driven in process, with no server and no sockets to a client: one
PUT of the bench value and 200 GETs and PUTs of warm-up, then ``--count`` GETs of
``/v1/kv/bench``, then ``--count`` PUTs of the bench value to it (a new revision each).

The process runs under ``valgrind --tool=callgrind --dump-before=getppid``: the driver
calls ``os.getppid()`` between the phases, so callgrind writes one count per phase and
the instructions of one GET (PUT) are its phase's count over ``--count``, with the
interpreter's start-up, the imports and the warm-up in phases of their own. valgrind
counts instructions, not time: the same build gives the same figure, whatever else the
machine is doing. What uvicorn, the kernel and the client cost is not in it; on Redis
the server's work is not either (it runs outside valgrind), redis-py's packing and
parsing and the script runner are. Background work that runs by the clock (the deadline
sweeper, the access log's flush timer) adds to a phase by its wall time: the sweeper is
slowed to its slowest setting here; Redis figures still move by a few percent between
runs, memory figures by much less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import ProcessSet, add_comparison_args, comparison_runs

VALUE = b'{"status":"running","step":42,"agent":"a1"}'
OPS = ("GET", "PUT")
WARMUP = 200


async def drive(count: int, backend_url: str) -> None:
    """The measured process: build the app, warm it up, then ``count`` GETs and ``count``
    PUTs, each phase between two ``os.getppid()`` markers."""
    from app.main import create_app
    from app.settings import Settings

    # Deadlines swept every 5 s (the most the setting allows), not every 0.25 s: each
    # sweep is work of its own, and how many fall into a phase depends on how long the
    # phase takes under valgrind on a machine of that moment's load (on Redis, one
    # sweep's round trips weigh as much as a few hundred key reads of a phase).
    app = create_app(Settings(backend=backend_url, sweep_interval_seconds=5))
    async with app.router.lifespan_context(app) as state:
        base: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5555),
            "root_path": "", "query_string": b"", "state": dict(state or {}),
        }
        put_headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                       (b"content-length", str(len(VALUE)).encode())]
        get_headers = [(b"host", b"127.0.0.1:8000")]

        async def call(method: str) -> None:
            body = VALUE if method == "PUT" else b""
            scope = dict(base, method=method, path="/v1/kv/bench", raw_path=b"/v1/kv/bench",
                         headers=put_headers if body else get_headers)
            messages = [{"type": "http.request", "body": body, "more_body": False}]

            async def receive() -> dict[str, Any]:
                if messages:
                    return messages.pop()
                await asyncio.Event().wait()
                raise AssertionError("unreachable")

            async def send(message: MutableMapping[str, Any]) -> None:
                if message["type"] == "http.response.start" and message["status"] >= 300:
                    raise SystemExit(f"{method} answered {message['status']}")

            await app(scope, receive, send)

        await call("PUT")
        for _ in range(WARMUP):
            await call("GET")
            await call("PUT")
        for op in OPS:
            os.getppid()  # callgrind dumps the count before this call: a phase ends
            for _ in range(count):
                await call(op)
        os.getppid()


def phase_counts(app_dir: Path, count: int, backend_url: str) -> dict[str, float]:
    """Instructions per call of each op, from one callgrind run."""
    with tempfile.TemporaryDirectory(prefix="cb-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORKBOARD_")}
        env["PYTHONPATH"] = str(app_dir)
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             "--dump-before=getppid", sys.executable, __file__,
             "--drive", str(count), "--backend-url", backend_url],
            cwd=app_dir, env=env, capture_output=True, text=True,
        )
        if proc.returncode != 0:
            raise SystemExit(f"callgrind run failed:\n{proc.stderr[-2000:]}")
        totals = []
        # Dump 1 is start-up, imports and warm-up; dump 2 the first op's phase, and so on.
        for i in range(2, 2 + len(OPS)):
            text = (Path(tmp) / f"callgrind.out.{i}").read_text()
            found = re.search(r"^totals: (\d+)", text, re.MULTILINE)
            if found is None:
                raise SystemExit(f"no totals in callgrind dump {i}")
            totals.append(int(found.group(1)))
        return {op: total / count for op, total in zip(OPS, totals, strict=True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_comparison_args(parser, count=1000)
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend-url", default="memory://", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive is not None:
        asyncio.run(drive(args.drive, args.backend_url))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not on PATH (Debian package: valgrind)")
    with tempfile.TemporaryDirectory(prefix="cb-hotpath-") as tmp, ProcessSet(Path(tmp)) as procs:
        for backend, app_dir, url in comparison_runs(args, procs, tmp):
            per_op = phase_counts(app_dir, args.count, url)
            figures = ", ".join(f"{op} {n:,.0f}" for op, n in per_op.items())
            print(f"{backend} {app_dir}: instructions per call in the app: {figures}",
                  flush=True)


if __name__ == "__main__":
    main()
