"""The tests' NATS flush (tests/nats_server.py): it deletes every stream and returns only
once the server has removed their files, so no test meets an earlier test's messages."""

from __future__ import annotations

import asyncio
import shutil
import threading
from pathlib import Path

import nats
import pytest

from tests.nats_server import (
    _STORES,
    _hidden_streams,
    flush_nats,
    pending_removals,
    wait_removed,
)


def streams_dir(nats_url: str) -> Path:
    (server,) = _STORES[nats_url]
    found = list(Path(server.dir).glob("jetstream/*/streams"))
    assert len(found) == 1
    return found[0]


async def put_and_read(nats_url: str, value: bytes | None) -> bytes | None:
    """Make the bucket ``left`` (or bind it), put ``value`` under ``k`` unless None,
    and read ``k`` back (None: the key is not there)."""
    nc = await nats.connect(nats_url)
    try:
        kv = await nc.jetstream().create_key_value(bucket="left", history=1)
        if value is not None:
            await kv.put("k", value)
        try:
            return (await kv.get("k")).value
        except nats.js.errors.KeyNotFoundError:
            return None
    finally:
        await nc.close()


def test_a_flush_waits_out_a_removal_in_progress_and_leaves_nothing_behind(
    nats_url: str,
) -> None:
    """A deleted stream's files still being removed (here a ``.KV_left`` directory,
    removed 0.3 s later, as a slow disk would) are waited out: deleting ``KV_left`` over
    them would leave its files in place, and the next ``left`` would read ``k`` again."""
    flush_nats(nats_url)
    assert asyncio.run(put_and_read(nats_url, b"old")) == b"old"
    streams = streams_dir(nats_url)
    leftover = streams / ".KV_left"
    (leftover / "msgs").mkdir(parents=True)
    (leftover / "msgs" / "1.blk").write_bytes(b"x" * 1024)
    assert pending_removals(_STORES[nats_url]) == [leftover]
    remover = threading.Timer(0.3, shutil.rmtree, (leftover,))
    remover.start()
    try:
        flush_nats(nats_url)
    finally:
        remover.join()
    assert pending_removals(_STORES[nats_url]) == []
    # (the server may remove the account's emptied streams directory too)
    assert not (streams / "KV_left").exists()
    assert asyncio.run(put_and_read(nats_url, None)) is None


def test_a_removal_that_never_ends_fails_the_wait_with_the_path(nats_url: str) -> None:
    flush_nats(nats_url)
    assert asyncio.run(put_and_read(nats_url, b"1")) == b"1"
    stuck = streams_dir(nats_url) / ".KV_stuck"
    stuck.mkdir()
    try:
        with pytest.raises(TimeoutError, match="KV_stuck"):
            wait_removed(nats_url, timeout=0.05)
    finally:
        stuck.rmdir()
    wait_removed(nats_url, timeout=0.05)


def test_directories_that_go_while_they_are_read_hold_nothing_pending(
    tmp_path: Path,
) -> None:
    """The server removes an account's ``streams`` directory (or the whole store) while
    the flush reads it: a CI run failed once on ``Path.glob`` raising FileNotFoundError
    for ``jetstream/$G/streams``. What is gone has nothing pending; what is there counts."""
    store = tmp_path / "jetstream"
    assert _hidden_streams(store) == []
    (store / "$G").mkdir(parents=True)
    (store / "meta.inf").write_bytes(b"")
    assert _hidden_streams(store) == []
    (store / "$G" / "streams" / ".KV_gone").mkdir(parents=True)
    (store / "$G" / "streams" / "KV_kept").mkdir()
    assert _hidden_streams(store) == [store / "$G" / "streams" / ".KV_gone"]
