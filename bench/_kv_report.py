"""kv_bench.py's report: the samples of its wrk runs, their medians per target and
operation, and the ratios (issue 15's goals among them) with the range of their rounds
and the same comparison by CPU per request. Pure functions of the samples, tested in
tests/test_bench_scripts.py."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class Labelled(Protocol):
    """What the report reads of an operation (kv_bench.Op)."""

    @property
    def label(self) -> str: ...

class Described(Protocol):
    """What the report reads of a target (kv_bench.Target)."""

    name: str
    description: str

    @property
    def ops(self) -> Mapping[str, Labelled]: ...

@dataclass
class Sample:
    """One wrk run, as reported by the ``done()`` hook of ``bench/wrk/kv.lua``."""

    target: str
    op: str
    round: int
    requests: int
    duration_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    raw: dict[str, Any]
    #: The target's CPU time (user + system of its server, its workers and the store
    #: behind it) per request in this run, in microseconds: less noisy than req/s on a
    #: shared machine, as it leaves out the time the server waited for a core (None: no
    #: /proc to read).
    cpu_us: float | None = None

@dataclass
class Summary:
    target: str
    op: str
    label: str
    rounds: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    rps_min: float
    rps_max: float
    cpu_us: float | None
    errors: int
    requests: int

@dataclass(frozen=True)
class RatioSpec:
    name: str
    num: tuple[str, str]
    den: tuple[str, str]
    goal: float | None  # a target to report against, or None for reference only

#: Goals of issue 15 (issue 2's were 0.5x, 1.0x and 1.0x).
RATIOS = [
    RatioSpec("corkboard-memory GET / bare GET", ("corkboard-memory", "GET"), ("bare", "GET"), 0.6),
    RatioSpec(
        "corkboard-memory PUT / bare PUT", ("corkboard-memory", "PUT"), ("bare", "PUT"), None
    ),
    RatioSpec("corkboard-redis GET / etcd range", ("corkboard-redis", "GET"), ("etcd", "GET"), 1.5),
    RatioSpec("corkboard-redis PUT / etcd put", ("corkboard-redis", "PUT"), ("etcd", "PUT"), 1.0),
    RatioSpec(
        "corkboard-redis GET / webdis GET", ("corkboard-redis", "GET"), ("webdis", "GET"), None
    ),
    RatioSpec(
        "corkboard-redis PUT / webdis SET", ("corkboard-redis", "PUT"), ("webdis", "PUT"), None
    ),
    RatioSpec("corkboard-nats GET / etcd range", ("corkboard-nats", "GET"), ("etcd", "GET"), None),
    RatioSpec("corkboard-nats PUT / etcd put", ("corkboard-nats", "PUT"), ("etcd", "PUT"), None),
    RatioSpec(
        "corkboard-nats GET / corkboard-redis GET",
        ("corkboard-nats", "GET"), ("corkboard-redis", "GET"), None,
    ),
    RatioSpec(
        "corkboard-nats PUT / corkboard-redis PUT",
        ("corkboard-nats", "PUT"), ("corkboard-redis", "PUT"), None,
    ),
    RatioSpec(
        "corkboard-memory GET / bare-joined GET", ("corkboard-memory", "GET"),
        ("bare-joined", "GET"), None,
    ),
    # The access log's share of a request: the same server with it switched off.
    RatioSpec(
        "corkboard-memory GET / corkboard-memory-nolog GET", ("corkboard-memory", "GET"),
        ("corkboard-memory-nolog", "GET"), 0.9,
    ),
    RatioSpec(
        "corkboard-memory PUT / corkboard-memory-nolog PUT", ("corkboard-memory", "PUT"),
        ("corkboard-memory-nolog", "PUT"), 0.9,
    ),
    RatioSpec("etcd range / bare GET", ("etcd", "GET"), ("bare", "GET"), None),
    RatioSpec("etcd put / bare PUT", ("etcd", "PUT"), ("bare", "PUT"), None),
    RatioSpec("webdis GET / bare GET", ("webdis", "GET"), ("bare", "GET"), None),
    RatioSpec("webdis SET / bare PUT", ("webdis", "PUT"), ("bare", "PUT"), None),
]

def _median_or_none(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None

def summarize(
    targets: Sequence[Described], ops: Sequence[str], samples: Sequence[Sample]
) -> list[Summary]:
    out: list[Summary] = []
    for target in targets:
        for op in ops:
            mine = [s for s in samples if s.target == target.name and s.op == op]
            if not mine:
                continue
            rps = [s.requests_per_s for s in mine]
            out.append(
                Summary(
                    target=target.name,
                    op=op,
                    label=target.ops[op].label,
                    rounds=len(mine),
                    requests_per_s=statistics.median(rps),
                    p50_ms=statistics.median(s.p50_ms for s in mine),
                    p99_ms=statistics.median(s.p99_ms for s in mine),
                    rps_min=min(rps),
                    rps_max=max(rps),
                    cpu_us=_median_or_none([s.cpu_us for s in mine]),
                    errors=sum(s.errors for s in mine),
                    requests=sum(s.requests for s in mine),
                )
            )
    return out

def ratios(summaries: Sequence[Summary], samples: Sequence[Sample]) -> list[dict[str, Any]]:
    by_key = {(s.target, s.op): s for s in summaries}
    out: list[dict[str, Any]] = []
    for spec in RATIOS:
        num, den = by_key.get(spec.num), by_key.get(spec.den)
        if num is None or den is None:
            continue
        per_round: list[float] = []
        for rnd in {s.round for s in samples}:
            a = [s for s in samples if (s.target, s.op) == spec.num and s.round == rnd]
            b = [s for s in samples if (s.target, s.op) == spec.den and s.round == rnd]
            if a and b and b[0].requests_per_s > 0:
                per_round.append(a[0].requests_per_s / b[0].requests_per_s)
        value = num.requests_per_s / den.requests_per_s if den.requests_per_s else float("nan")
        # The same comparison by server CPU per request (the denominator's over the
        # numerator's, so that above 1 still means the numerator does better).
        cpu_ratio = (den.cpu_us / num.cpu_us
                     if num.cpu_us and den.cpu_us is not None else None)
        out.append(
            {
                "name": spec.name,
                "ratio": value,
                "cpu_ratio": cpu_ratio,
                "per_round": per_round,
                "goal": spec.goal,
                "meets_goal": None if spec.goal is None else value >= spec.goal,
            }
        )
    return out

def print_report(
    summaries: list[Summary],
    ratio_rows: list[dict[str, Any]],
    skipped: dict[str, str],
    targets: Sequence[Described],
    header: str,
) -> None:
    print()
    print(header)
    for target in targets:
        print(f"  {target.name:22} {target.description}")
    print()
    cols = f"{'target':22} {'op':3} {'request':28} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7}"
    print(f"{cols} {'req/s min-max':>15} {'n':>2} {'errors':>6} {'CPU us/req':>10}")
    print("-" * (len(cols) + 37))
    for s in summaries:
        spread = f"{s.rps_min:.0f}-{s.rps_max:.0f}"
        cpu = f"{s.cpu_us:10.1f}" if s.cpu_us is not None else f"{'-':>10}"
        print(
            f"{s.target:22} {s.op:3} {s.label:28} {s.requests_per_s:9.0f} {s.p50_ms:7.2f}"
            f" {s.p99_ms:7.2f} {spread:>15} {s.rounds:2d} {s.errors:6d} {cpu}"
        )
    print()
    if ratio_rows:
        print(f"{'ratio (median req/s)':50} {'value':>6} {'per round':>13} {'by CPU':>7}  goal")
        for row in ratio_rows:
            pr = row["per_round"]
            rng = f"{min(pr):.2f}-{max(pr):.2f}" if pr else "-"
            if row["goal"] is None:
                goal = "(reference)"
            else:
                verdict = "met" if row["meets_goal"] else "NOT met"
                goal = f">= {row['goal']:.1f}x: {verdict}"
            by_cpu = f"{row['cpu_ratio']:6.2f}x" if row["cpu_ratio"] is not None else f"{'-':>7}"
            print(f"{row['name']:50} {row['ratio']:5.2f}x {rng:>13} {by_cpu}  {goal}")
    else:
        print("no ratios: a ratio needs both of its targets in the run")
    if any(s.errors for s in summaries):
        print("\nnote: some runs had errors (non-2xx answers, timeouts or socket errors);")
        print("      their req/s include failed requests and should not be trusted.")
    for name, why in skipped.items():
        print(f"skipped {name}: {why}")

