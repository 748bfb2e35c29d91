"""A key's entry read from its messages: metadata from the ``Cb-Meta`` header of what
Corkboard wrote, derived from the kept history for what other NATS clients wrote; the
expiry overrides of touched keys; and the sweeper's deadline index.

Expiry overrides: a touch changes a key's expiry without a new revision, so it cannot be
a message in the namespace's stream (every message takes a sequence). It is a record in
Corkboard's bucket, ``_corkboard``, at ``ttl.<ns>.<key token>`` holding
``"<sequence> <expires_at ms>"``; it applies while the key's newest message is still
that sequence (any later write supersedes it). The write that supersedes a touched
revision carries the expiry that revision ended with in a ``Cb-Ended`` header (so the
key's history shows it, as on the other engines), and removes the record (a purge of
the record's subject up to the record it read: a touch made meanwhile stays).
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson

from app.backends.nats.names import SYSTEM_BUCKET, Meta, stream_of, token_of
from app.backends.nats.store import Msg, NatsStore
from app.domain.keys import KeyEntry


def json_value(msg: Msg) -> bytes:
    """The value's JSON bytes: as stored, when Corkboard wrote it or it is JSON; else
    the bytes as a JSON string (a NATS client may store anything)."""
    if msg.meta is not None:
        return msg.data
    try:
        orjson.loads(msg.data)
    except orjson.JSONDecodeError:
        return orjson.dumps(msg.data.decode("utf-8", "replace"))
    return msg.data


def txn_offset(msg: Msg) -> int:
    """How far after a message its batch's commit is (``Cb-Txn``): a key written by a
    transaction (or deleted by a lease's end) is at the commit's sequence, the
    transaction's revision; 0 for any other message."""
    text = msg.headers.get("Cb-Txn", "")
    return int(text) if text.isdigit() else 0


def revision_of(msg: Msg) -> int:
    """The revision a key's message stands for (see ``txn_offset``)."""
    return msg.seq + txn_offset(msg)


def torn(msgs: Iterable[Msg | None], upto: int) -> bool:
    """Whether messages read as the stream stood at ``upto`` hold a batch's part whose
    commit is past it: the server was storing that batch as they were read (its
    messages become readable one after the other within it), so read again."""
    return any(m is not None and m.seq + txn_offset(m) > upto >= m.seq for m in msgs)


def lease_of(msg: Msg | None) -> str | None:
    """The lease a key's newest message attaches it to (``Cb-Lease``), or None."""
    if msg is None or msg.deleted:
        return None
    return msg.headers.get("Cb-Lease") or None


def from_meta(key: str, msg: Msg, meta: Meta) -> KeyEntry:
    """The entry a message Corkboard wrote holds (a creation's ``created_revision`` is
    written as 0: it is the message's own revision)."""
    revision = revision_of(msg)
    return KeyEntry(
        key, msg.data, revision, meta.created_revision or revision, meta.version,
        meta.created_at, meta.modified_at, meta.expires_at or None,
    )


def derive(key: str, msgs: list[Msg]) -> list[KeyEntry | None]:
    """The entry each message (oldest first) leaves, None after a delete. A message a
    NATS client wrote without ``Cb-Meta`` continues the version count of the entry
    before it (from the oldest kept message)."""
    out: list[KeyEntry | None] = []
    before: KeyEntry | None = None
    for msg in msgs:
        meta = msg.meta
        ended = msg.headers.get(ENDED, "")
        if before is not None and ended.isdigit():  # the previous revision was touched
            before = out[-1] = KeyEntry(
                key, before.value, before.revision, before.created_revision, before.version,
                before.created_at, before.modified_at, int(ended) or None,
            )
        if msg.deleted:
            before = None
        elif meta is not None:
            before = from_meta(key, msg, meta)
        elif before is not None:
            before = KeyEntry(
                key, json_value(msg), msg.seq, before.created_revision, before.version + 1,
                before.created_at, msg.time_ms, None,
            )
        else:
            before = KeyEntry(
                key, json_value(msg), msg.seq, msg.seq, 1, msg.time_ms, msg.time_ms, None
            )
        out.append(before)
    return out


#: The header of a message replacing a touched revision: the expiry it ended with.
ENDED = "Cb-Ended"


def touched(msg: Msg | None, entry: KeyEntry | None) -> bool:
    """Whether ``entry``, read at ``msg``, has its expiry from an override (a touch)."""
    if msg is None or entry is None:
        return False
    meta = msg.meta
    return (entry.expires_at or 0) != (meta.expires_at if meta is not None else 0)


def mark_ended(msg: Msg | None, entry: KeyEntry | None, headers: dict[str, str]) -> bool:
    """Add ``Cb-Ended`` to the headers of the message replacing ``entry`` (at ``msg``)
    when it was touched; whether it was (then ``drop_override`` after the write)."""
    if not touched(msg, entry):
        return False
    assert entry is not None
    headers[ENDED] = str(entry.expires_at or 0)
    return True


async def drop_override(store: NatsStore, ns: str, key: str, superseded_by: int) -> None:
    """Remove the key's override record if it names a revision before ``superseded_by``
    (one read, one purge of the record's subject up to that record: a touch of the new
    revision made meanwhile is a later record, and stays)."""
    subject = override_subject(ns, key)
    record = await store.last(SYSTEM_BUCKET, subject)
    found = parse_override(record)
    if record is None or (found is not None and found[0] >= superseded_by):
        return
    async with store.mapped_errors():
        await store.js.purge_stream(stream_of(SYSTEM_BUCKET), seq=record.seq + 1,
                                    subject=subject)


def override_subject(ns: str, key: str) -> str:
    return f"$KV.{SYSTEM_BUCKET}.ttl.{ns}.{token_of(key)}"


def parse_override(msg: Msg | None) -> tuple[int, int] | None:
    """(sequence, expires_at) of an override record."""
    if msg is None or msg.deleted:
        return None
    parts = msg.data.split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def with_override(entry: KeyEntry, msg: Msg, override: tuple[int, int] | None) -> KeyEntry:
    if override is None or override[0] != msg.seq:
        return entry
    return KeyEntry(
        entry.key, entry.value, entry.revision, entry.created_revision, entry.version,
        entry.created_at, entry.modified_at, override[1] or None,
    )


async def entry_from(
    store: NatsStore, ns: str, key: str, msg: Msg | None, override: tuple[int, int] | None
) -> KeyEntry | None:
    """The entry the key's newest message ``msg`` holds (expired or not), or None."""
    if msg is None or msg.deleted:
        return None
    meta = msg.meta
    found: KeyEntry | None
    if meta is not None:
        found = from_meta(key, msg, meta)
    else:
        derived = derive(key, await store.history(ns, msg.subject))
        found = derived[-1] if derived and derived[-1] is not None else derive(key, [msg])[0]
    assert found is not None
    return with_override(found, msg, override)


def meta_after(
    before: KeyEntry | None, previous_seq: int, now: int, expires_at: int | None,
    op: str = "put",
) -> Meta:
    """The metadata of a write that replaces ``before`` (None: creates)."""
    if before is None:
        return Meta(0, 1, now, now, expires_at or 0, previous_seq, op)
    return Meta(
        before.created_revision, before.version + 1, before.created_at, now,
        expires_at or 0, previous_seq, op,
    )


# -- the sweeper's deadline index ---------------------------------------------------------


def deadline_subject(ns: str) -> str:
    return f"$KV.{SYSTEM_BUCKET}.deadline.{ns}"


async def lower_deadline(store: NatsStore, ns: str, deadline: int) -> None:
    """Make the index say namespace ``ns`` is due at ``deadline`` or earlier."""
    subject = deadline_subject(ns)
    while True:
        current = await store.last(SYSTEM_BUCKET, subject)
        if current is not None and not current.deleted and current.data.isdigit():
            if int(current.data) <= deadline:
                return
        seq = await store.publish(
            SYSTEM_BUCKET, subject, str(deadline).encode(), {},
            current.seq if current is not None else 0,
        )
        if seq is not None:
            return
