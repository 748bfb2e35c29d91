"""Instructions per key read inside the app: a figure that a busy machine cannot move.

    .venv/bin/python bench/hotpath_instructions.py                  # this checkout
    .venv/bin/python bench/hotpath_instructions.py --app-dir /tmp/old --app-dir .

Throughput ratios (kv_bench.py) need a quiet machine; this does not. The ASGI app,
built by ``create_app`` with its defaults on the memory backend (access log on, metrics,
access layer, hot path), is driven in process, with no server and no sockets: one PUT of
the bench value, 200 GETs of warm-up, then N GETs of ``/v1/kv/bench``. The process runs
under ``valgrind --tool=callgrind`` twice, with N = ``--small`` and N = ``--large``;
the difference of the two instruction totals over the difference of N is the
instructions one GET costs in the app (interpreter start, imports and warm-up cancel
out). valgrind counts instructions, not time: the same build gives the same figure,
whatever else the machine is doing. Each run takes a few minutes (the interpreter's
start-up under valgrind). What uvicorn, the kernel and the client cost is not in it.
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

VALUE = b'{"status":"running","step":42,"agent":"a1"}'


async def drive(count: int) -> None:
    """The measured process: build the app and send ``count`` GETs through it."""
    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(backend="memory://"))
    async with app.router.lifespan_context(app) as state:
        base: dict[str, Any] = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
            "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5555),
            "root_path": "", "query_string": b"", "state": dict(state or {}),
        }

        async def call(method: str, body: bytes = b"") -> None:
            scope = dict(base, method=method, path="/v1/kv/bench", raw_path=b"/v1/kv/bench",
                         headers=[(b"host", b"127.0.0.1:8000"),
                                  (b"content-type", b"application/json"),
                                  (b"content-length", str(len(body)).encode())])
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

        await call("PUT", VALUE)
        for _ in range(200 + count):
            await call("GET")


def instructions(app_dir: Path, count: int) -> int:
    with tempfile.TemporaryDirectory(prefix="cb-callgrind-") as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CORKBOARD_")}
        env["PYTHONPATH"] = str(app_dir)
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             sys.executable, __file__, "--drive", str(count)],
            cwd=app_dir, env=env, capture_output=True, text=True,
        )
        found = re.search(r"Collected : (\d+)", proc.stderr)
        if proc.returncode != 0 or found is None:
            raise SystemExit(f"callgrind run failed:\n{proc.stderr[-2000:]}")
        return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app-dir", action="append", type=Path,
                        help="directory holding the app/ package (repeat to compare; "
                             "default: this checkout)")
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=1100)
    parser.add_argument("--drive", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.drive is not None:
        asyncio.run(drive(args.drive))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not on PATH (Debian package: valgrind)")
    for app_dir in args.app_dir or [Path(__file__).resolve().parent.parent]:
        small = instructions(app_dir.resolve(), args.small)
        large = instructions(app_dir.resolve(), args.large)
        per_get = (large - small) / (args.large - args.small)
        print(f"{app_dir}: {per_get:,.0f} instructions per GET in the app", flush=True)


if __name__ == "__main__":
    main()
