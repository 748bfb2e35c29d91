"""The commit message of an atomic batch that is one event (a transaction, a pattern
delete, a lease's end): the batch's last message, on the reserved KV key ``_cbt`` of the
namespace's bucket, holding ``{"type", "key", "at", "changes"}``. Each change is either
``{"part": d}``, the key message ``d`` sequences before the commit (its value and old
value are read from it, as for a key event, so no value is stored twice), or a change
given in full (a lock released by a lease's end).

The key messages of such a batch carry ``Cb-Txn: d`` (entries.py): they are no events
of their own, and the entry they hold is at the commit's sequence, the one revision of
the whole batch. The change log (log.py) reports the commit message as the event.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from app.backends.nats.batch import Out
from app.backends.nats.names import TXN_TOKEN
from app.backends.nats.store import Msg
from app.domain.events import ChangeEvent, build_event

#: A key change of the batch, from the message ``seq``: the change's members, or None
#: when the message is gone (compacted).
PartReader = Callable[[int], Awaitable[dict[str, Any] | None]]


def commit_subject(ns: str) -> str:
    return f"$KV.{ns}.{TXN_TOKEN}"


def with_commit(
    ns: str, type_: str, key: str, at: int, parts: list[Out],
    extra: list[dict[str, Any]] | None = None, *, guards: list[Out] | None = None,
) -> list[Out]:
    """The whole batch: ``guards`` (check messages), the key messages ``parts`` (each
    marked with its distance to the commit), then the commit with one change per part
    (in order) and the ``extra`` changes after them."""
    before = list(guards or [])
    total = len(before) + len(parts) + 1
    marked: list[Out] = []
    changes: list[dict[str, Any]] = []
    for i, out in enumerate(parts):
        distance = total - 1 - (len(before) + i)
        marked.append(Out(out.subject, out.data, {**out.headers, "Cb-Txn": str(distance)},
                          out.expected, out.checked))
        changes.append({"part": distance})
    changes.extend(extra or [])
    data = orjson.dumps({"type": type_, "key": key, "at": at, "changes": changes})
    return [*before, *marked, Out(commit_subject(ns), data)]


def is_commit(ns: str, msg: Msg) -> bool:
    return msg.subject == commit_subject(ns) and not msg.deleted


async def compound_event(ns: str, msg: Msg, part: PartReader) -> ChangeEvent | None:
    """The event a commit message is; None when one of its key messages is gone."""
    try:
        body = orjson.loads(msg.data)
        type_, key, at = str(body["type"]), str(body["key"]), int(body["at"])
        raw = list(body["changes"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    changes: list[dict[str, Any]] = []
    for change in raw:
        if isinstance(change, dict) and set(change) == {"part"}:
            found = await part(msg.seq - int(change["part"]))
            if found is None:
                return None
            changes.append(found)
        elif isinstance(change, dict):
            changes.append(change)
    return build_event(ns, msg.seq, type_, key, at, with_values=False,
                       extra={"changes": changes})
