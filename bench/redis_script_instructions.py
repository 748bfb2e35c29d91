"""Instructions per call of the Redis scripts, counted in redis-server under callgrind.

    .venv/bin/python bench/redis_script_instructions.py                     # this checkout
    .venv/bin/python bench/redis_script_instructions.py --app-dir /tmp/old --app-dir .

The server's side of a key write or read, which ``hotpath_instructions.py`` (the app's
side) leaves out. One ``redis-server`` on a free loopback port runs under ``valgrind
--tool=callgrind``; the Functions library of each ``--app-dir`` (its
``app/backends/lua``, built by this checkout's ``build_library``, each under a name of its
own) is loaded into it, and each library's namespace gets 1,500 writes of
the bench value to one key first, so its history (depth 10) and its event log (retention
1,000 events) are at their bounds, as in a long-running deployment. Then, per library and
script, the counters are zeroed (``callgrind_control -z``), ``--count`` calls are sent
in pipelines of 250, and the count is dumped: instructions per call, the server's
command handling, the Lua and the network reads and writes included. Load does not move
these counts.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _procs import LOOPBACK, free_port

from app.backends.redis.library import build_library

VALUE = '{"status":"running","step":42,"agent":"a1"}'
BOUNDS = "1000:67108864:1000000:1073741824:0"  # events kept, event bytes, keys, bytes, cluster
HISTORY = "10"
#: Script name -> its arguments after the common three (common.lua's calling convention).
CALLS = {
    "kv_put": ["bench", VALUE, "0", "", "", "", "", "", ""],
    "kv_read": ["bench"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--app-dir", action="append", type=Path,
                        help="a checkout whose app/backends/lua to count (repeatable)")
    parser.add_argument("--count", type=int, default=1000, help="calls per script counted")
    args = parser.parse_args()
    dirs = args.app_dir or [Path(__file__).resolve().parent.parent]
    for tool in ("valgrind", "callgrind_control", "redis-server"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not on PATH (Debian: valgrind, redis-server)")
    with tempfile.TemporaryDirectory(prefix="cb-redis-callgrind-") as tmp:
        port = free_port()
        out = Path(tmp) / "cg.out"
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
             "redis-server", "--port", str(port), "--bind", LOOPBACK, "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host=LOOPBACK, port=port)
        try:
            for _ in range(600):
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.1)
            names = []
            for i, app_dir in enumerate(dirs):
                name = f"lib{i}"
                # This checkout's builder on each checkout's scripts (the same layout since
                # the scripts became a library).
                library = build_library(app_dir / "app/backends/lua", name)
                client.function_load(library.source)
                names.append(name)
                send(client, name, "kv_put", 1500)
            dumps = 0
            print(f"{'app dir':40} {'script':8} {'instructions per call':>22}")
            for script in CALLS:
                for name, app_dir in zip(names, dirs, strict=True):
                    subprocess.run(["callgrind_control", "-z", str(server.pid)],
                                   capture_output=True, check=True)
                    send(client, name, script, args.count)
                    subprocess.run(["callgrind_control", "-d", str(server.pid)],
                                   capture_output=True, check=True)
                    dumps += 1
                    text = Path(f"{out}.{dumps}").read_text(errors="replace")
                    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
                    if found is None:
                        raise SystemExit(f"no totals in callgrind dump {dumps}")
                    per_call = int(found.group(1)) / args.count
                    print(f"{app_dir!s:40} {script:8} {per_call:22,.0f}")
        finally:
            server.terminate()
            server.wait()


def send(client: redis.Redis, library: str, script: str, count: int) -> None:
    keys = [f"cb:{{{library}}}:rev"]
    common = [library, BOUNDS, HISTORY]
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        pipe.fcall(f"{library}_{script}", 1, *keys, *common, *CALLS[script])
        if i % 250 == 249:
            pipe.execute()
    pipe.execute()


if __name__ == "__main__":
    main()
