"""Where Corkboard's names live in NATS: a namespace's KV bucket, a key's subject, and
the ``Cb-Meta`` header that carries an entry's metadata beside its value.

- A namespace is the KV bucket of the same name (``[a-z0-9][a-z0-9_-]{0,62}`` is a valid
  bucket name as it is), so NATS clients use the bucket they already know; its stream
  is ``KV_<namespace>`` and its subjects ``$KV.<namespace>.<key>``. Corkboard's own
  bucket, ``_corkboard`` (expiry overrides of touched keys, the sweeper's deadline
  index), cannot be a namespace (a namespace never starts with ``_``).
- A key that is a valid NATS KV key (``[-/_=.A-Za-z0-9]``, no leading or trailing
  ``.``, no empty token) is stored under its own name. Other Corkboard keys (those with
  ``:``, ``@`` or ``+``, or dots NATS cannot hold) are stored as ``_cbk.`` followed by
  the key with ``_3A`` for ``:``, ``_40`` for ``@``, ``_2B`` for ``+`` and ``_2E`` for
  ``.``; Corkboard keys never contain ``_``, so the escape cannot be mistaken and a NATS
  key starting with ``_`` is never a native Corkboard key: ``_cb`` and ``_cbk`` are
  Corkboard's reserved prefixes. A NATS key that is not a valid Corkboard key (e.g. one
  with ``_``) is not visible through Corkboard (not listed, no event).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.grammar import MAX_KEY_BYTES

#: The bucket of Corkboard's own records (never a namespace: those never start with _).
SYSTEM_BUCKET = "_corkboard"
ESCAPED_PREFIX = "_cbk."
_ESCAPES = {":": "_3A", "@": "_40", "+": "_2B", ".": "_2E"}
_UNESCAPES = {v[1:]: k for k, v in _ESCAPES.items()}
_NATS_KEY_RE = re.compile(r"[-/_=.A-Za-z0-9]+")
_CORKBOARD_KEY_RE = re.compile(r"[A-Za-z0-9.:/@=+\-]+")
_ESCAPE_RE = re.compile(r"_(3A|40|2B|2E)")


def stream_of(ns: str) -> str:
    """The JetStream stream behind namespace ``ns``'s bucket."""
    return f"KV_{ns}"


def is_nats_key(name: str) -> bool:
    """Whether ``name`` is a key NATS KV clients accept."""
    return (
        _NATS_KEY_RE.fullmatch(name) is not None
        and not name.startswith(".") and not name.endswith(".") and ".." not in name
    )


def token_of(key: str) -> str:
    """The NATS key (subject tail) a Corkboard key is stored under."""
    if is_nats_key(key):
        return key
    return ESCAPED_PREFIX + "".join(_ESCAPES.get(c, c) for c in key)


def key_of(token: str) -> str | None:
    """The Corkboard key stored under NATS key ``token``; None when it is not one
    (Corkboard's own records, or a NATS key Corkboard cannot name)."""
    if token.startswith(ESCAPED_PREFIX):
        key = _ESCAPE_RE.sub(lambda m: _UNESCAPES[m.group(1)], token[len(ESCAPED_PREFIX):])
        return key if "_" not in key and token_of(key) == token else None
    if (
        token.startswith("_") or len(token) > MAX_KEY_BYTES
        or not _CORKBOARD_KEY_RE.fullmatch(token)
    ):
        return None
    return token


#: Reserved KV keys of a namespace's bucket: the commit message of a transaction or of a
#: lease's end (``_cbt``, the event), the check messages of atomic batches (``_cbc``,
#: batch.py), and lease records (``_cbe.<id>``, the id escaped as a lock name is).
TXN_TOKEN = "_cbt"
CHECK_TOKEN = "_cbc"
LEASE_PREFIX = "_cbe."


#: The KV keys of lock records (``_cbl.<escaped name>``) in a namespace's bucket.
LOCK_PREFIX = "_cbl."
_LOCK_ESCAPES = {"_": "_5F", **_ESCAPES}


def lock_subject(ns: str, name: str) -> str:
    """The subject of lock ``name``'s record in namespace ``ns``'s bucket: one NATS KV
    key, ``_cbl.`` + the name with ``_ . : @ +`` escaped (``_5F`` ...), so it is
    reversible and never a Corkboard key (those never start with ``_``)."""
    return f"$KV.{ns}.{LOCK_PREFIX}" + "".join(_LOCK_ESCAPES.get(c, c) for c in name)


def lease_subject(ns: str, lease_id: str) -> str:
    """The subject of lease ``lease_id``'s record in namespace ``ns``'s bucket."""
    return f"$KV.{ns}.{LEASE_PREFIX}" + "".join(_LOCK_ESCAPES.get(c, c) for c in lease_id)


def is_lock_subject(ns: str, subject: str) -> bool:
    return subject.startswith(f"$KV.{ns}.{LOCK_PREFIX}")


#: The KV keys of session records (``_cbs.<escaped id>``) in a namespace's bucket.
SESSION_PREFIX = "_cbs."


def session_subject(ns: str, sid: str) -> str:
    """The subject of session ``sid``'s record (its state and its locks) in namespace
    ``ns``'s bucket: ``_cbs.`` + the id escaped as a lock name is (sessionstate.py)."""
    return f"$KV.{ns}.{SESSION_PREFIX}" + "".join(_LOCK_ESCAPES.get(c, c) for c in sid)


def is_session_subject(ns: str, subject: str) -> bool:
    return subject.startswith(f"$KV.{ns}.{SESSION_PREFIX}")


def fence_subject(ns: str, scope: str, name: str) -> str:
    """The record a fence is checked in: the lock's, or its session's (scope)."""
    return session_subject(ns, scope) if scope else lock_subject(ns, name)


def subject_of(ns: str, key: str) -> str:
    return f"$KV.{ns}.{token_of(key)}"


def key_of_subject(ns: str, subject: str) -> str | None:
    prefix = f"$KV.{ns}."
    return key_of(subject[len(prefix):]) if subject.startswith(prefix) else None


@dataclass(frozen=True, slots=True)
class Meta:
    """What Corkboard writes in a message's ``Cb-Meta`` header: the entry's creation
    revision, version, times (epoch ms; ``expires_at`` 0 for none), the sequence of the
    subject's previous message (0: none), and ``op`` (``put``, ``delete``, ``expire``)."""

    created_revision: int
    version: int
    created_at: int
    modified_at: int
    expires_at: int
    previous: int
    op: str = "put"

    def header(self) -> str:
        return (
            f"{self.op} {self.created_revision} {self.version} {self.created_at} "
            f"{self.modified_at} {self.expires_at} {self.previous}"
        )

    @classmethod
    def parse(cls, text: str | None) -> Meta | None:
        if not text:
            return None
        parts = text.split()
        if len(parts) != 7 or not all(p.isdigit() for p in parts[1:]):
            return None
        c, v, ca, ma, e, p = (int(x) for x in parts[1:])
        return cls(c, v, ca, ma, e, p, parts[0])


#: The KV keys of artifact records (``_cba.<escaped key>``) in a namespace's bucket.
ARTIFACT_PREFIX = "_cba."


def artifact_subject(ns: str, key: str) -> str:
    """The subject of artifact ``key``'s record in namespace ``ns``'s bucket: one NATS KV
    key, ``_cba.`` + the key escaped as a lock name is (never a Corkboard key)."""
    return f"$KV.{ns}.{ARTIFACT_PREFIX}" + "".join(_LOCK_ESCAPES.get(c, c) for c in key)


def is_artifact_subject(ns: str, subject: str) -> bool:
    return subject.startswith(f"$KV.{ns}.{ARTIFACT_PREFIX}")
