"""Property-based run of schemathesis against the served OpenAPI document, on both
backends with access tokens configured: no 5xx, and every response conforms to the
document (status, content type, headers, body schema). Bounded examples keep it short.

An event-loop watchdog runs meanwhile: the service runs with its loop in debug mode
(tests/watchdog_app.py), so the loop logs "Executing ... took N seconds" for every
callback that held it over 100 ms (a control shows the detector reports a deliberate
stall). The run fails on any stall over STALL_LIMIT: on a 2-core machine shared with a
dozen busy processes, and with debug mode recording a traceback per callback, ordinary
requests were seen at 0.15-0.6 s of wall time, so the limit there is 1 s; the 100 ms
bound of the attacks themselves is asserted in tests/test_safe_to_share.py.

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
#: What asyncio's (and uvloop's) debug mode logs for a callback over 100 ms.
STALL_RE = re.compile(r"Executing .* took (\d+\.\d+) seconds")
STALL_LIMIT = 1.0  # seconds (see the module docstring)
#: Access lines of requests that took 100 ms or more: where a stall came from.
SLOW_RE = re.compile(r'"duration_ms":(\d{4,}|[1-9]\d{2})\.')


def test_schemathesis_finds_no_server_error_or_nonconformance(backend: str) -> None:
    env = {
        "CORKBOARD_BACKEND": backend, "CORKBOARD_LOG_LEVEL": "warning",
        "CORKBOARD_TOKENS": TOKENS,
    }
    with running(ServiceProcess(env, app="tests.watchdog_app:app")) as (service,):
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
        reported = [(float(m.group(1)), line[-40:]) for line in lines
                    if (m := STALL_RE.search(line))]
        stalls = [line for took, line in reported if took > STALL_LIMIT]
        slow = [line[:300] for line in lines if SLOW_RE.search(line)]
        assert not stalls, "the event loop stalled:\n" + "\n".join(stalls + slow)


def test_the_watchdog_reports_a_stall() -> None:
    """The control: a callback holding the loop 250 ms is reported."""
    code = (
        "import asyncio, time, tests.watchdog_app as w\n"
        "async def main():\n"
        "    async def rx(): return {'type': 'lifespan.startup'}\n"
        "    loop = asyncio.get_running_loop()\n"
        "    loop.set_debug(True); loop.slow_callback_duration = w.SLOW_CALLBACK_SECONDS\n"
        "    loop.call_soon(time.sleep, 0.25)\n"
        "    await asyncio.sleep(0.3)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).resolve().parent.parent)
    assert STALL_RE.search(out.stderr), out.stderr[-2000:]
