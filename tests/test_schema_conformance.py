"""Property-based run of schemathesis against the served OpenAPI document, on both
backends: no 5xx, and every response conforms to the document (status, content type,
headers, body schema). Bounded examples keep it to seconds.

Not checked: 'positive_data_acceptance' (the document cannot express every rule, e.g. a
key's segments) and 'unsupported_method' (PUT /v1/kv/a/history is, by API.md, a write of
the key 'a/history' and so 400 invalid_key, not 405).
"""

from __future__ import annotations

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


def test_schemathesis_finds_no_server_error_or_nonconformance(backend: str) -> None:
    env = {"CORKBOARD_BACKEND": backend, "CORKBOARD_LOG_LEVEL": "warning"}
    with running(ServiceProcess(env)) as (service,):
        result = subprocess.run(
            [st_binary(), "run", f"{service.url}/openapi.json", "--checks", CHECKS,
             "--max-examples", "15", "--generation-deterministic", "--request-timeout", "10",
             "--exclude-path-regex", "^/v1/watch", "--max-failures", "20", "--no-color"],
            capture_output=True, text=True, timeout=240,
        )
        assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
        assert "Tested:" in result.stdout
        assert service.proc is not None and service.proc.poll() is None  # still serving
