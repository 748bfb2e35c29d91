"""``ComposedBackend``: a ``Backend`` made of parts, one per part interface.

A backend builds its parts in ``__init__`` (``keys``, ``log``, ``locks``, ``artifacts``,
``sessions``, ``leases``, ``txns``) and adds only its life cycle; every method of the
``Backend`` interface forwards to the part that implements it, so callers that take a
``Backend`` keep working while new code can take just the part it needs.
"""

from __future__ import annotations

from typing import Any

from app.backends.base import Backend
from app.backends.parts.artifacts import ArtifactIndex
from app.backends.parts.keys import KeyStore
from app.backends.parts.locks import LockEngine
from app.backends.parts.log import ChangeLog
from app.backends.parts.sessions import SessionStore
from app.backends.parts.txn import LeaseStore, TxnStore


class _Forward:
    """A method of the part named ``part``, read off the instance's part."""

    def __init__(self, part: str) -> None:
        self.part = part
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        method = getattr(getattr(instance, self.part), self.name)
        # Kept on the instance, so later calls (every GET and PUT of a key) find the
        # part's bound method directly; parts are built once, in __init__. Not when a
        # subclass overrides the name and reached this through super(): the instance's
        # copy would hide the override.
        if _first_in_mro(type(instance), self.name) is self:
            instance.__dict__[self.name] = method
        return method


def _first_in_mro(cls: type, name: str) -> Any:
    return next(c.__dict__[name] for c in cls.__mro__ if name in c.__dict__)


def forward(part: str) -> Any:
    """The method of the same name of the part attribute ``part`` (one descriptor per
    name: it learns the name it is assigned to)."""
    return _Forward(part)


class ComposedBackend(Backend):
    """A Backend whose methods are its parts'. Subclasses set the parts and implement
    ``start``, ``close`` and ``ping``."""

    keys: KeyStore
    log: ChangeLog
    locks: LockEngine
    artifacts: ArtifactIndex
    sessions: SessionStore
    leases: LeaseStore
    txns: TxnStore

    kv_get = forward("keys")
    kv_put = forward("keys")
    kv_update = forward("keys")
    kv_increment = forward("keys")
    kv_touch = forward("keys")
    kv_delete = forward("keys")
    kv_history = forward("keys")
    kv_list = forward("keys")

    current_revision = forward("log")
    read_events = forward("log")
    expire_due = forward("log")
    run_sweeper = forward("log")

    lock_acquire = forward("locks")
    lock_refresh = forward("locks")
    lock_release = forward("locks")
    lock_force_release = forward("locks")
    lock_get = forward("locks")
    lock_list = forward("locks")

    artifact_reserve = forward("artifacts")
    artifact_discard = forward("artifacts")
    artifact_put = forward("artifacts")
    artifact_get = forward("artifacts")
    artifact_delete = forward("artifacts")
    artifact_list = forward("artifacts")
    artifact_garbage = forward("artifacts")
    artifact_garbage_done = forward("artifacts")

    session_put = forward("sessions")
    session_get = forward("sessions")
    session_list = forward("sessions")
    session_delete = forward("sessions")
    var_register = forward("sessions")
    var_get = forward("sessions")
    var_list = forward("sessions")
    var_read = forward("sessions")
    var_write = forward("sessions")
    var_delete = forward("sessions")
    subscription_set = forward("sessions")
    subscription_list = forward("sessions")
    subscription_get = forward("sessions")
    dedupe_check = forward("sessions")
    state_get = forward("sessions")
    state_update = forward("sessions")
    session_snapshot = forward("sessions")
    session_import = forward("sessions")

    lease_grant = forward("leases")
    lease_keepalive = forward("leases")
    lease_get = forward("leases")
    lease_list = forward("leases")
    lease_revoke = forward("leases")

    txn = forward("txns")
    kv_delete_pattern = forward("txns")
