"""The benchmark scripts still run against the app as it is (bench/README.md).

They are measurements, never pass/fail figures: these tests time nothing and assert no
rate. They catch a script left behind by a change of the app (an import, an internal
name a bench drives, an option): every script answers ``--help``; the two that need no
outside server run once, small; the bare ASGI baseline answers as kv_bench.py expects of
it; and kv_bench.py's report (medians, ratios, the goals' verdicts) is checked on samples
made up for it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
#: Modules that other scripts import, with no command line of their own.
LIBRARIES = {"_kv_report.py", "_procs.py", "bare_app.py"}
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


def bench_module(name: str) -> ModuleType:
    """A module of bench/ (not a package: its scripts put it on sys.path)."""
    sys.path.insert(0, str(BENCH))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCH))


async def test_the_bare_baseline_answers_a_key_get_and_put() -> None:
    app = bench_module("bare_app").app
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


@dataclass
class _Op:
    label: str


@dataclass
class _Target:
    name: str
    description: str = ""
    ops: dict[str, _Op] = field(
        default_factory=lambda: {"GET": _Op("GET /x"), "PUT": _Op("PUT /x")}
    )


@pytest.fixture
def report() -> Iterator[ModuleType]:
    yield bench_module("_kv_report")


def _sample(report: ModuleType, target: str, op: str, rnd: int, rps: float,
            cpu_us: float | None = None) -> Any:
    return report.Sample(
        target=target, op=op, round=rnd, requests=int(rps * 5), duration_s=5.0,
        requests_per_s=rps, p50_ms=1.0 + rnd, p99_ms=2.0 + rnd, errors=0, raw={},
        cpu_us=cpu_us,
    )


def test_kv_report_takes_medians_of_the_rounds(report: ModuleType) -> None:
    samples = [_sample(report, "bare", "GET", r, rps, cpu)
               for r, rps, cpu in ((1, 300.0, 30.0), (2, 100.0, None), (3, 200.0, 10.0))]
    (summary,) = report.summarize([_Target("bare")], ["GET", "PUT"], samples)
    assert (summary.target, summary.op, summary.label) == ("bare", "GET", "GET /x")
    assert summary.rounds == 3 and summary.requests == 3000
    assert summary.requests_per_s == 200.0
    assert (summary.rps_min, summary.rps_max) == (100.0, 300.0)
    assert (summary.p50_ms, summary.p99_ms) == (3.0, 4.0)
    assert summary.cpu_us == 20.0  # a round without /proc figures is left out


def test_kv_report_ratios_pair_rounds_and_judge_the_goal_by_the_medians(
    report: ModuleType,
) -> None:
    rounds = {  # round: (corkboard-memory GET, bare GET)
        1: (90.0, 100.0), 2: (50.0, 100.0), 3: (70.0, 140.0),
    }
    samples = [
        _sample(report, target, "GET", rnd, pair[i], cpu_us=(40.0 if i == 0 else 20.0))
        for rnd, pair in rounds.items()
        for i, target in enumerate(("corkboard-memory", "bare"))
    ]
    targets = [_Target("corkboard-memory"), _Target("bare")]
    rows = report.ratios(report.summarize(targets, ["GET"], samples), samples)
    (row,) = [r for r in rows if r["name"] == "corkboard-memory GET / bare GET"]
    assert row["ratio"] == pytest.approx(70.0 / 100.0)  # median over median
    assert sorted(row["per_round"]) == pytest.approx([0.5, 0.5, 0.9])
    assert row["cpu_ratio"] == pytest.approx(0.5)  # above 1 would mean less CPU than bare
    assert row["goal"] == 0.6 and row["meets_goal"] is True
    # Only ratios whose two targets both ran are reported.
    assert [r["name"] for r in rows] == ["corkboard-memory GET / bare GET"]


def test_kv_report_says_not_met_below_a_goal_and_prints_it(
    report: ModuleType, capsys: pytest.CaptureFixture[str],
) -> None:
    samples = [_sample(report, "corkboard-redis", "PUT", 1, 85.0),
               _sample(report, "etcd", "PUT", 1, 100.0)]
    targets = [_Target("corkboard-redis", "redis"), _Target("etcd", "etcd")]
    summaries = report.summarize(targets, ["PUT"], samples)
    rows = report.ratios(summaries, samples)
    (row,) = rows
    assert row["meets_goal"] is False and row["cpu_ratio"] is None
    report.print_report(summaries, rows, {"webdis": "not installed"}, targets, "header")
    out = capsys.readouterr().out
    row_line = r"\ncorkboard-redis PUT / etcd put +0\.85x +0\.85-0\.85 +- +>= 1\.0x: NOT met\n"
    assert re.search(row_line, out), out
    assert "skipped webdis: not installed" in out
