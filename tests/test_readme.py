"""The README's curl examples run as written: each block of the sections below, in order,
with bash against a live service on a fresh memory backend, exits 0 and gets no 5xx.

Streams (``curl -N`` on ``/v1/watch``) never end by themselves, so those lines are left
out; every other line runs unchanged except for the service's port.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import ROOT, ServiceProcess, running

SECTIONS = ["Keys in curl", "Locks in curl", "Sessions in curl", "Artifacts in curl"]
STREAM = re.compile(r"curl\s+-s?N\b.*?/v1/watch")


def readme_blocks(section: str) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {section}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end > 0 else len(text)]
    return re.findall(r"^```(?:sh|bash)\n(.*?)^```", body, flags=re.S | re.M)


def test_the_sections_have_blocks_that_set_their_own_base_url() -> None:
    for section in SECTIONS:
        blocks = readme_blocks(section)
        assert blocks, section
        for block in blocks:
            assert re.search(r"^B=http://127\.0\.0\.1:8000$", block, flags=re.M), section


@pytest.fixture(scope="module")
def service() -> Iterator[ServiceProcess]:
    with running(ServiceProcess({"CORKBOARD_BACKEND": "memory://"})) as (server,):
        yield server


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_readme_curl_examples_run(service: ServiceProcess, tmp_path: Path) -> None:
    # Every curl prints its status on a line of its own; none may wait long.
    (tmp_path / ".curlrc").write_text('write-out = "\\n@status %{http_code}\\n"\nmax-time = 20\n')
    env = {"PATH": "/usr/bin:/bin:/usr/local/bin", "CURL_HOME": str(tmp_path),
           "HOME": str(tmp_path)}
    ran = 0
    for section in SECTIONS:
        for block in readme_blocks(section):
            script = "\n".join(
                ": stream left out" if STREAM.search(line) else line
                for line in block.replace("127.0.0.1:8000", f"127.0.0.1:{service.port}")
                .replace("localhost:8000", f"127.0.0.1:{service.port}")
                .splitlines()
            )
            result = subprocess.run(
                ["bash", "-e", "-o", "pipefail", "-c", script], cwd=tmp_path, env=env,
                capture_output=True, text=True, timeout=120,
            )
            assert result.returncode == 0, (section, result.stdout[-2000:], result.stderr[-2000:])
            statuses = [int(s) for s in re.findall(r"^@status (\d{3})$", result.stdout, re.M)]
            assert statuses, (section, result.stdout[-2000:])
            assert all(s < 500 for s in statuses), (section, statuses, result.stdout[-3000:])
            assert 0 not in statuses
            ran += len(statuses)
    assert ran > 60
