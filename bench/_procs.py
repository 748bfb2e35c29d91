"""Process helpers shared by the benchmarks in ``bench/``.

Starting servers on free loopback ports, waiting for them to listen, and stopping
them (and every process they spawned) again, including on Ctrl-C, SIGTERM or an
error. The KV benchmark uses it today; the fan-out and lock benchmarks are meant
to reuse it.

Every process is started in its own session (so its process group id is its pid)
and, on Linux, with a parent-death signal, so that it does not outlive the
benchmark even if the benchmark itself is killed hard. ``stop()`` signals only that
process group: the process we started and its own children (e.g. uvicorn workers).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import FrameType, TracebackType

LOOPBACK = "127.0.0.1"

_PR_SET_PDEATHSIG = 1


class ProcessError(RuntimeError):
    """A managed process failed to start, exited early, or never became ready."""


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port on ``host`` that was free a moment ago.

    There is an unavoidable race between closing the probe socket and the server
    binding the port; callers that need several ports should take them all before
    starting anything (see :func:`free_ports`).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def free_ports(count: int, host: str = LOOPBACK) -> list[int]:
    """Return ``count`` distinct free ports, holding all probes open at once."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def port_open(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _child_setup() -> None:
    """Run in the child between fork and exec: own session, die with the parent."""
    os.setsid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class ManagedProcess:
    """A child process started in its own process group, with its output in a log file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> ManagedProcess:
        if self.proc is not None:
            raise ProcessError(f"{self.name}: already started")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"$ {' '.join(self.argv)}\n".encode())
            log.flush()
            try:
                self.proc = subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    cwd=self.cwd,
                    preexec_fn=_child_setup,
                )
            except OSError as exc:
                raise ProcessError(f"{self.name}: cannot start {self.argv[0]}: {exc}") from exc
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc is not None else None
            raise ProcessError(
                f"{self.name}: exited early (code {code}); log {self.log_path}:\n{self.log_tail()}"
            )

    def wait_for_port(self, port: int, host: str = LOOPBACK, timeout: float = 30.0) -> None:
        """Wait until ``host:port`` accepts connections, failing fast if we exit."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            if port_open(port, host):
                return
            time.sleep(0.05)
        raise ProcessError(f"{self.name}: nothing listening on {host}:{port} after {timeout}s")

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Poll ``ready()`` until it is true, failing fast if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.1)
        raise ProcessError(f"{self.name}: not ready ({what}) after {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after ``timeout``."""
        proc = self.proc
        if proc is None:
            return
        pgid = proc.pid  # started with setsid(): its pid is its process group id
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # The leader may be gone while its children (workers) linger: sweep the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)


class ProcessSet:
    """Owns managed processes and stops them all, newest first, on exit.

    Use as a context manager; it stops everything on normal exit, on exceptions
    and on KeyboardInterrupt. :func:`sigterm_as_interrupt` makes SIGTERM take the
    same path.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[ManagedProcess] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> ManagedProcess:
        proc = ManagedProcess(name, argv, log_path=self.log_dir / f"{name}.log", env=env, cwd=cwd)
        self._procs.append(proc)
        return proc.start()

    def pid_of(self, name: str) -> int | None:
        """The pid of the newest running process started as ``name``."""
        for proc in reversed(self._procs):
            if proc.name == name:
                return proc.pid
        return None

    def stop(self, proc: ManagedProcess) -> None:
        proc.stop()
        if proc in self._procs:
            self._procs.remove(proc)

    def stop_all(self) -> None:
        while self._procs:
            proc = self._procs.pop()
            with contextlib.suppress(Exception):
                proc.stop()

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Ctrl-C during cleanup must not leave processes behind: ignore it until done.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            self.stop_all()
        finally:
            signal.signal(signal.SIGINT, previous)


def tree_cpu_seconds(pids: Iterable[int]) -> float | None:
    """User + system CPU seconds of ``pids`` and every process descended from them (a
    server's workers), from /proc; None without /proc (not Linux) or without a pid."""
    tree = set(pids)
    if not tree or not os.path.isdir("/proc"):
        return None
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # gone since the scan
        fields = stat[stat.rindex(b")") + 2:].split()  # after "pid (comm) "
        child = int(entry.name)
        parents[child] = int(fields[1])
        times[child] = int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    grew = True
    while grew:
        grew = False
        for child, parent in parents.items():
            if parent in tree and child not in tree:
                tree.add(child)
                grew = True
    return sum(times.get(p, 0) for p in tree) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so ``finally``/``with`` cleanup runs."""

    def _handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """True when a GET of ``url`` answers 2xx. Meant for loopback readiness checks."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status: int = resp.status
            return 200 <= status < 300
    except (urllib.error.URLError, OSError):
        return False


def http_request(
    url: str,
    *,
    method: str = "GET",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One HTTP request; returns (status, body), also for 4xx/5xx answers."""
    req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def private_redis(procs: ProcessSet, data_dir: str) -> tuple[ManagedProcess, str]:
    """A ``redis-server`` of the bench's own on a free loopback port, without
    persistence (never the Redis on 6379): the process and its URL."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    server = procs.start(f"redis-{port}", [
        exe, "--port", str(port), "--bind", LOOPBACK, "--save", "", "--appendonly", "no",
        "--dir", data_dir, "--daemonize", "no",
    ])
    server.wait_for_port(port)
    return server, f"redis://{LOOPBACK}:{port}/0"


def add_comparison_args(parser: argparse.ArgumentParser, count: int) -> None:
    """The instruction counters' common options: ``--app-dir`` (repeated), ``--backend``
    (repeated: memory, redis) and ``--count`` (calls per op measured)."""
    parser.add_argument("--app-dir", action="append", type=Path,
                        help="directory holding the app/ package (repeat to compare; "
                             "default: this checkout)")
    parser.add_argument("--backend", action="append", choices=("memory", "redis"),
                        help="backend(s) to measure (repeat; default: memory)")
    parser.add_argument("--count", type=int, default=count, help="calls per op measured")


def comparison_runs(
    args: argparse.Namespace, procs: ProcessSet, data_dir: str
) -> Iterator[tuple[str, Path, str]]:
    """(backend, app dir, backend URL) of each run ``add_comparison_args`` asked for: on
    Redis, a fresh ``private_redis`` per app (each starts from an empty database),
    stopped once the run is done."""
    default = [Path(__file__).resolve().parent.parent]
    app_dirs = [d.resolve() for d in args.app_dir or default]
    for backend in args.backend or ["memory"]:
        for app_dir in app_dirs:
            if backend != "redis":
                yield backend, app_dir, "memory://"
                continue
            server, url = private_redis(procs, data_dir)
            yield backend, app_dir, url
            procs.stop(server)
