"""What a namespace may hold at most, and the error of a write past it."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import QuotaExceeded


@dataclass(frozen=True, slots=True)
class Bounds:
    """What a backend keeps per namespace at most (API.md section 9, "Bounded memory").

    ``max_bytes`` counts, exactly and on every backend alike, the JSON length of: every
    kept revision of every key's value (the live value is its newest revision), each
    session's metadata, each variable's value and definition (``definition_json``), and
    each thread's or channel's state map. ``max_keys`` counts stored keys.
    """

    event_retention: int = 100_000
    event_retention_bytes: int = 64 * 1_048_576
    max_keys: int = 1_000_000
    max_bytes: int = 1_073_741_824
    lock_max_waiters: int = 1000
    max_leases: int = 100_000
    max_locks: int = 100_000

    def script_arg(self) -> str:
        """The Lua prelude's ARGV[2]: 'events:event_bytes:max_keys:max_bytes'."""
        return (
            f"{self.event_retention}:{self.event_retention_bytes}:{self.max_keys}:"
            f"{self.max_bytes}"
        )


#: A quota's setting and unit, by the name a QuotaExceeded carries.
_QUOTAS = {
    "keys": ("CORKBOARD_NAMESPACE_MAX_KEYS", "live keys"),
    "bytes": ("CORKBOARD_NAMESPACE_MAX_BYTES", "bytes"),
    "leases": ("CORKBOARD_NAMESPACE_MAX_LEASES", "live leases"),
    "locks": ("CORKBOARD_NAMESPACE_MAX_LOCKS", "held locks"),
}


def import_passes_lock_quota(held: int, session_held: int, imported: int, most: int) -> bool:
    """Whether a session import holding ``imported`` live locks, over a session that
    holds ``session_held`` in a namespace that holds ``held``, would take the namespace
    past its lock quota ``most``. An import that holds no more than the session does now
    always fits (lock_quota in session_import.lua is the same rule)."""
    return imported > session_held and held - session_held + imported > most


def quota_exceeded(ns: str, what: str, limit: int) -> QuotaExceeded:
    """The 507 for a write that would take ``ns`` past a quota; nothing was written."""
    setting, unit = _QUOTAS[what]
    return QuotaExceeded(
        f"Namespace {ns!r} would exceed its quota of {limit} {unit} ({setting}); "
        "nothing was written. Delete something first.",
        quota=what, limit=limit,
    )
