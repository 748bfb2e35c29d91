"""The benchmark scripts still run against the app as it is (bench/README.md).

They are measurements, never pass/fail figures: these tests time nothing and assert no
rate. They catch a script left behind by a change of the app (an import, an internal
name a bench drives, an option): every script answers ``--help``; the two that need no
outside server run once, small; and the bare ASGI baseline answers as kv_bench.py
expects of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
#: Modules that other scripts import, with no command line of their own.
LIBRARIES = {"_procs.py", "bare_app.py"}
SCRIPTS = sorted(p.name for p in BENCH.glob("*.py") if p.name not in LIBRARIES)


def run(*args: str, timeout: float = 120) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=BENCH.parent, capture_output=True, text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_bench_script_answers_help(script: str) -> None:
    assert run(f"bench/{script}", "--help").startswith("usage: ")


def test_access_log_bench_formats_lines_as_the_app_does() -> None:
    out = run("bench/access_log_bench.py", "--lines", "1024", "--rounds", "1")
    assert "app (AccessLog._lines)" in out
    assert "plain (orjson of the entry dict)" in out
    assert "app / plain, per round: median" in out


def test_memory_bench_reports_every_part_at_every_size(tmp_path: Path) -> None:
    out_file = tmp_path / "memory.json"
    run("bench/memory_bench.py", "--sizes", "1000,2000", "--ops", "100", "--rounds", "1",
        "--app-ops", "100", "--json-out", str(out_file), timeout=300)
    results = json.loads(out_file.read_text())
    assert [row["keys"] for row in results["rss"]] == [1000, 2000]
    assert all(row["bytes_per_key"] > 0 for row in results["rss"])
    for part in ("rates", "app"):
        assert [row["keys"] for row in results[part]] == [1000, 2000]
        for row in results[part]:
            assert set(row["rates"]) == {"GET", "PUT update", "PUT new"}
            assert all(rate > 0 for rate in row["rates"].values())


async def test_the_bare_baseline_answers_a_key_get_and_put() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        from bare_app import app
    finally:
        sys.path.remove(str(BENCH))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://bench"
    ) as client:
        got = await client.get("/v1/kv/benchkey")
        put = await client.put("/v1/kv/benchkey", content=b'{"a":1}')
        missing = await client.get("/elsewhere")
        wrong = await client.delete("/v1/kv/benchkey")
    assert got.status_code == put.status_code == 200
    assert got.json()["value"] == {"status": "running", "step": 42, "agent": "a1"}
    assert missing.status_code == 404 and wrong.status_code == 405
