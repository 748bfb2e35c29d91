"""Property-based run of schemathesis against the served OpenAPI document, on both
backends with access tokens configured: no 5xx, and every response conforms to the
document (status, content type, headers, body schema). Bounded examples keep it short.

An event-loop watchdog runs meanwhile (tests/watchdog_app.py): every callback that held
the loop over 100 ms, not counting time the machine kept the loop's thread waiting for a
CPU, is reported, and the run fails on any (a control shows a deliberate stall is
reported and a busy machine's preemption is not).

Not checked: 'positive_data_acceptance' (the document cannot express every rule, e.g. a
key's segments) and 'unsupported_method' (PUT /v1/kv/a/history is, by API.md, a write of
the key 'a/history' and so 400 invalid_key, not 405).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ServiceProcess, running

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    # Allow on a 405 answer to OPTIONS: the path's methods as the document declares them
    # (tests/test_methods.py has the cases).
    "allow_header_conformance",
])


def st_binary() -> str:
    found = Path(sys.executable).parent / "st"
    if found.exists():
        return str(found)
    which = shutil.which("st")
    if which is None:
        pytest.fail("schemathesis (st) is not installed; it is a test dependency")
    return which


TOKEN = "schemathesis-token-0123456789"
TOKENS = json.dumps([
    {"token": TOKEN, "namespaces": ["*"], "permissions": ["read", "write", "admin"]},
])
#: What the watchdog reports for a callback that held the loop over 100 ms.
STALL_RE = re.compile(r"Executing .* took (\d+\.\d+) seconds")
#: Access lines of requests that took 100 ms or more: where a stall came from.
SLOW_RE = re.compile(r'"duration_ms":(\d{4,}|[1-9]\d{2})\.')


def test_schemathesis_finds_no_server_error_or_nonconformance(backend: str) -> None:
    env = {
        "CORKBOARD_BACKEND": backend, "CORKBOARD_LOG_LEVEL": "info",
        "CORKBOARD_TOKENS": TOKENS,
    }
    watched = ServiceProcess(env, app="tests.watchdog_app:app", args=("--loop", "asyncio"))
    with running(watched) as (service,):
        result = subprocess.run(
            [st_binary(), "run", f"{service.url}/openapi.json", "--checks", CHECKS,
             "--header", f"Authorization: Bearer {TOKEN}",
             "--max-examples", "15", "--generation-deterministic", "--request-timeout", "10",
             "--exclude-path-regex", "^/v1/watch", "--max-failures", "20", "--no-color"],
            capture_output=True, text=True, timeout=240,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert "Tested:" in result.stdout
        assert service.proc is not None and service.proc.poll() is None  # still serving
        lines = service.output().splitlines()
        stalls = [line[:300] for line in lines if STALL_RE.search(line)]
        slow = [line[:300] for line in lines if SLOW_RE.search(line)]
        assert not stalls, "the event loop stalled:\n" + "\n".join(stalls + slow)


def test_the_watchdog_reports_a_stall_and_not_a_wait_for_a_cpu() -> None:
    """The control: a callback computing 250 ms is reported; one computing 50 ms while
    two busy processes share its CPU (over 100 ms of wall time, as on a busy machine)
    is not."""
    code = (
        "import asyncio, os, subprocess, sys, time, tests.watchdog_app as w\n"
        "cpu = sorted(os.sched_getaffinity(0))[0]\n"
        "os.sched_setaffinity(0, {cpu})\n"
        "def spin(cpu_seconds):\n"
        "    end = time.thread_time() + cpu_seconds\n"
        "    while time.thread_time() < end: pass\n"
        "def shared():\n"
        "    burn = 'import os, time\\nos.sched_setaffinity(0, {%d})\\nwhile True: pass' % cpu\n"
        "    hogs = [subprocess.Popen([sys.executable, '-c', burn]) for _ in range(2)]\n"
        "    def measured():\n"
        "        began = time.perf_counter()\n"
        "        spin(0.05)\n"
        "        print(f'wall {time.perf_counter() - began:.3f}', file=sys.stderr, flush=True)\n"
        "    return hogs, measured\n"
        "async def main():\n"
        "    w.install()\n"
        "    loop = asyncio.get_running_loop()\n"
        "    loop.call_soon(spin, 0.25)\n"
        "    await asyncio.sleep(0.3)\n"
        "    print('--', file=sys.stderr, flush=True)\n"
        "    hogs, measured = shared()\n"
        "    try:\n"
        "        await asyncio.sleep(0.2)  # the hogs are running\n"
        "        loop.call_soon(measured)\n"
        "        await asyncio.sleep(0.5)\n"
        "    finally:\n"
        "        for h in hogs: h.kill()\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    spun, _, shared = out.stderr.partition("--")
    assert STALL_RE.search(spun) and "spin" in spun, out.stderr[-2000:]
    wall = re.search(r"wall (\d+\.\d+)", shared)
    assert wall is not None and float(wall.group(1)) > 0.1, shared  # the CPU was shared
    assert not STALL_RE.search(shared), shared
