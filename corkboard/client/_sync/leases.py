# Generated from _async/leases.py by scripts/unasync.py: do not edit.
"""Leases (API.md section 11): grant, keepalive, read, list and revoke calls, and
``lease()``, a context manager that holds a lease, keeps it alive in the background and
revokes it on exit (etcd's lease keepalive helpers). Keys (``put(..., lease=)``) and
locks (``acquire(..., lease=)``) on a lease end with it; a watch opened with
``lease=`` keeps a lease alive from the service while the stream is open (presence)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType

from corkboard.client._sync.base import Base
from corkboard.client._sync.paging import every
from corkboard.client._concurrency import Ticker
from corkboard.client._protocol import Call, duration_seconds, id_path, params
from corkboard.client.errors import CorkboardError, LeaseLost, LeaseNotFound, Unavailable
from corkboard.client.txn import lease_id
from corkboard.client.types import Duration, LeaseDetail, LeaseInfo, LeaseRef, Page


def _lease_path(lease: LeaseRef) -> str:
    return f"/v1/leases/{id_path(lease_id(lease))}"


class Leases(Base):
    def grant_lease(self, ttl: Duration, *, id: str | None = None) -> LeaseInfo:
        """Grant a lease of ``ttl`` (above 0; seconds or '10s'), with the id ``id``
        (AlreadyExists while such a lease lives) or a generated one. Never repeated."""
        body: dict[str, object] = {"ttl": ttl}
        if id is not None:
            body["id"] = id
        call = Call.write("POST", "/v1/leases", body, fenced=False)
        return LeaseInfo.from_json(self._json(call))

    def keepalive(self, lease: LeaseRef) -> LeaseInfo:
        """Extend the lease by its ttl from now; LeaseNotFound once it has ended."""
        call = Call.write("POST", _lease_path(lease) + "/keepalive", fenced=False, retry=True)
        return LeaseInfo.from_json(self._json(call))

    def get_lease(self, lease: LeaseRef) -> LeaseDetail:
        """The lease with its keys and locks; LeaseNotFound once it has ended."""
        return LeaseDetail.from_json(self._json(Call.read(_lease_path(lease))))

    def list_leases(
        self, pattern: str = "*", *, limit: int | None = None, cursor: str | None = None
    ) -> Page[LeaseInfo]:
        """One page of the live leases whose ids match ``pattern``, in id order."""
        data = self._json(
            Call.read("/v1/leases", params(pattern=pattern, limit=limit, cursor=cursor))
        )
        return Page([LeaseInfo.from_json(i) for i in data["items"]], data.get("next_cursor"),
                    data.get("revision"))

    def iter_leases(
        self, pattern: str = "*", *, page_size: int | None = None
    ) -> Iterator[LeaseInfo]:
        """Every live lease whose id matches ``pattern``, page after page."""
        return every(lambda cursor: self.list_leases(pattern, limit=page_size, cursor=cursor))

    def revoke_lease(self, lease: LeaseRef) -> LeaseDetail:
        """End the lease now: its keys are deleted and its locks released at one
        revision (``revision`` of the answer), with one ``lease.revoked`` event.
        LeaseNotFound when it had ended already. Never repeated."""
        call = Call.write("DELETE", _lease_path(lease), fenced=False)
        return LeaseDetail.from_json(self._json(call))

    def lease(
        self, ttl: Duration, *, id: str | None = None, keepalive_every: float | None = None,
        revoke: bool = True,
    ) -> Lease:
        """``with client.lease(10, id="agent-7") as lease:`` grants a lease, keeps
        it alive every ttl/3 in the background and revokes it on exit (``revoke=False``:
        lets it lapse after its ttl instead). Put keys and locks on it with
        ``lease=lease``. If it lapses meanwhile (``lease.lost``, ``check()``), exit
        raises LeaseLost."""
        return Lease(self, ttl, id=id, keepalive_every=keepalive_every, revoke=revoke)


class Lease:
    """A held lease (see ``Leases.lease``): ``id``, ``info``, ``lost``,
    ``keepalives``."""

    def __init__(
        self, client: Leases, ttl: Duration, *, id: str | None,
        keepalive_every: float | None, revoke: bool,
    ) -> None:
        self.client = client
        self.ttl = ttl
        self.ttl_seconds = duration_seconds(ttl)
        if self.ttl_seconds <= 0:
            raise ValueError("a lease needs a ttl above 0")
        self.requested_id = id
        self.keepalive_every = keepalive_every or self.ttl_seconds / 3
        self.revoke = revoke
        self.info: LeaseInfo | None = None
        self.revoked: LeaseDetail | None = None
        self.lost: CorkboardError | None = None
        self.keepalives = 0
        self._deadline = 0.0
        self._ticker: Ticker | None = None

    @property
    def id(self) -> str:
        assert self.info is not None, "the lease is not granted"
        return self.info.id

    def check(self) -> None:
        """Raise LeaseLost if the keepalives found the lease ended."""
        if self.lost is not None:
            raise LeaseLost(f"lease {self.id!r} lapsed or was revoked: {self.lost}")

    def _keepalive(self) -> bool:
        started = time.monotonic()
        try:
            info = self.client.keepalive(self.id)
        except Unavailable as exc:  # no answer: alive until its ttl runs out
            if time.monotonic() >= self._deadline:
                self.lost = exc
                return False
            return True
        except CorkboardError as exc:  # lease_not_found: it ended
            self.lost = exc
            return False
        self.info = info
        self.keepalives += 1
        self._deadline = started + info.ttl
        return True

    def __enter__(self) -> Lease:
        started = time.monotonic()
        self.info = self.client.grant_lease(self.ttl, id=self.requested_id)
        self._deadline = started + self.info.ttl
        self._ticker = Ticker(self.keepalive_every, self._keepalive)
        self._ticker.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._ticker is not None:
            self._ticker.stop()
        if self.revoke and self.lost is None:
            try:
                self.revoked = self.client.revoke_lease(self.id)
            except LeaseNotFound as error:
                self.lost = error
            except Unavailable:
                if exc is None:
                    raise
        if self.lost is not None and exc is None:
            self.check()

    def __repr__(self) -> str:
        return f"<Lease {self.info.id if self.info else self.requested_id!r}>"
