"""Test support: a lifespan-running ASGI client, a real redis-server, real uvicorn servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from app.main import create_app
from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
#: The backend call timeout of in-process test apps: a loaded 2-core CI machine can
#: stall a process for seconds, which is no 503 (tests of the timeout set their own).
TEST_BACKEND_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(
    port: int, timeout: float = 15.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


class ServerProcess:
    """A private server process on a free loopback port, with a temporary directory:
    ``_spawn(argv)`` starts it and waits for its port; ``stop``, ``cleanup`` end it."""

    def __init__(self, port: int | None, prefix: str) -> None:
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix=prefix)
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer(ServerProcess):
    """A private redis-server on a free port, in a temporary directory."""

    def __init__(
        self, port: int | None = None, *, appendonly: bool = False, extra: tuple[str, ...] = ()
    ) -> None:
        super().__init__(port, "corkboard-redis-")
        self.extra = extra
        self.appendonly = appendonly

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not on PATH")
        self._spawn([
            binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes" if self.appendonly else "no", "--dir", self.dir,
            "--protected-mode", "no", *self.extra,
        ])
        return self


class LifespanApp:
    """Runs an ASGI app's lifespan and hands its state to every request, as a server does."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self._receive: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._sent: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope = dict(scope)
        scope["state"] = dict(self.state)
        await self.app(scope, receive, send)

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}
        self._task = asyncio.create_task(
            self.app(scope, self._receive.get, self._sent.put)  # type: ignore[arg-type]
        )
        await self._receive.put({"type": "lifespan.startup"})
        message = await self._sent.get()
        if message["type"] != "lifespan.startup.complete":
            raise RuntimeError(f"startup failed: {message.get('message')}")

    async def stop(self) -> None:
        await self._receive.put({"type": "lifespan.shutdown"})
        await self._sent.get()
        assert self._task is not None
        await self._task


@contextlib.asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client talking to a fresh app (lifespan running) on ``settings``."""
    app = LifespanApp(create_app(settings))
    await app.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://corkboard") as client:
            yield client
    finally:
        await app.stop()


#: The HTTP protocol ``corkboard serve`` runs (app/cli.py): real-process tests use it too.
HTTP_PROTOCOL = "app.serving:JoinedHttpToolsProtocol"


class ServiceProcess:
    """``python -m uvicorn app.main:app`` on a free port, configured by environment."""

    #: Seconds to wait for /healthz: a loaded machine (2 cores, several suites) can take
    #: over 20 s to import and start; a healthy start takes about one.
    start_timeout: float = 60

    def __init__(
        self, env: dict[str, str], *, workers: int = 1, port: int | None = None,
        app: str = "app.main:app", args: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.args = args
        self.port = port or free_port()
        self.env = {**os.environ, **env}
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="corkboard-", suffix=".log", delete=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(self.workers), "--no-access-log",
             "--timeout-graceful-shutdown", "5", "--http", HTTP_PROTOCOL,
             "--no-proxy-headers",
             # Idle connections kept longer than test clients keep them (httpx: 5 s, as
             # uvicorn's default), so no call races the server's closing of its connection.
             "--timeout-keep-alive", "30", *self.args],
            cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
        )
        # Generous by default: a cold start takes seconds on a busy 2-core machine.
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.kill()  # not left running for a later test to trip over
        raise TimeoutError(f"service did not start: {self.output()}")

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@contextlib.contextmanager
def running(*services: ServiceProcess) -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    try:
        for s in services:
            started.append(s.start())
        yield started
    finally:
        # Every service, also one whose start failed (timed out): its process may run.
        for s in services:
            s.stop()
        for s in services:
            s.log.close()
            with contextlib.suppress(OSError):
                os.unlink(s.log.name)


@contextlib.asynccontextmanager
async def started_hub(url: str, **options: Any) -> AsyncIterator[Any]:
    """A started ``app.events.Hub`` (``options``: its keyword settings) on a started
    backend at ``url``; both closed afterwards."""
    from app.backends import backend_from_url
    from app.events import Hub

    store = backend_from_url(url, Settings(backend=url))
    await store.start()
    hub = Hub(store, **options)
    await hub.start()
    try:
        yield hub
    finally:
        await hub.close()
        await store.close()
