"""The life cycle of artifact blob ids on NATS: one row per blob that is not (or not
yet) an artifact's live content, in Corkboard's bucket ``_corkboard`` at
``art.<ns>.<blob>``, holding ``"<state> <due ms> <key>"``:

- ``reserved``: an upload is under way; past ``due`` its bytes are garbage.
- ``commit``: ``artifact_put`` of ``key`` took the reservation (a compare-and-swap on
  the row, so the collector cannot take it at the same time) and is publishing the
  artifact's record. The row is removed once the record is stored; if the process dies
  in between, the collector finds the row past ``due`` and keeps the bytes when the
  key's record names the blob, else removes them.
- ``garbage``: the bytes of a replaced, deleted or expired version of ``key``, to
  remove after ``due`` (its grace). Written before the record that drops the blob is
  published (so a crash between the two loses no garbage) and again after it; the
  collector removes the bytes only if the key's record does not name the blob (a
  change that did not happen leaves its blob alone).
- ``claimed``: handed to a collector until ``due`` (its lease); handed out again after.

A live artifact's blob has no row. Rows are removed with JetStream's purge of their
subject up to the message read, so a newer row written meanwhile stays; rows never
pile up (``_corkboard`` keeps one message per subject).
"""

from __future__ import annotations

from dataclasses import dataclass

from app.backends.nats.names import SYSTEM_BUCKET, stream_of
from app.backends.nats.store import Msg, NatsStore

#: The subjects of every row (the collector's listing).
ALL_ROWS = f"$KV.{SYSTEM_BUCKET}.art.>"


def row_subject(ns: str, blob: str) -> str:
    return f"$KV.{SYSTEM_BUCKET}.art.{ns}.{blob}"


@dataclass(frozen=True, slots=True)
class Row:
    """A blob's row: its namespace and id, state, due time (ms), key ('' when none) and
    the sequence of its message."""

    ns: str
    blob: str
    state: str
    due: int
    key: str
    seq: int


def parse_row(msg: Msg | None) -> Row | None:
    if msg is None or msg.deleted:
        return None
    parts = msg.data.decode("utf-8", "replace").split(" ", 2)
    names = msg.subject.split(".")
    if len(parts) != 3 or not parts[1].isdigit() or len(names) != 5:
        return None
    return Row(names[3], names[4], parts[0], int(parts[1]), parts[2], msg.seq)


class BlobRows:
    """Reads and writes the rows of ``_corkboard``."""

    def __init__(self, store: NatsStore) -> None:
        self.store = store

    async def read(self, ns: str, blob: str) -> Row | None:
        return parse_row(await self.store.last(SYSTEM_BUCKET, row_subject(ns, blob)))

    async def write(
        self, ns: str, blob: str, state: str, due: int, key: str = "",
        expected: int | None = None,
    ) -> bool:
        """Store the row (if it is still at sequence ``expected``, when given)."""
        data = f"{state} {due} {key}".encode()
        seq = await self.store.publish(
            SYSTEM_BUCKET, row_subject(ns, blob), data, {}, expected
        )
        return seq is not None

    async def remove(self, ns: str, blob: str, upto: int | None = None) -> None:
        """Remove the row (only its messages up to sequence ``upto``, when given)."""
        async with self.store.mapped_errors():
            await self.store.js.purge_stream(
                stream_of(SYSTEM_BUCKET), seq=upto + 1 if upto else None,
                subject=row_subject(ns, blob),
            )

    async def all(self) -> list[Row]:
        msgs, _ = await self.store.multi_last(SYSTEM_BUCKET, ALL_ROWS)
        return [row for row in map(parse_row, msgs) if row is not None]
