"""The client's error tree: every problem+json answer becomes a typed exception.

The class is chosen by the problem's ``code`` in ``CODES``, the one table of the codes
the service answers with (an unknown code, or an answer without one, falls back to the
most general class of its status). Each carries ``status``, ``code``, ``detail``,
``errors`` and the whole ``problem`` document::

    CorkboardError                          status  code
     +-- InvalidRequest                     400     invalid_request
     |    +-- InvalidKey, InvalidPattern, InvalidTTL
     +-- Unauthorized                       401     unauthorized
     +-- Forbidden                          403     forbidden
     +-- NotFound                           404     not_found
     |    +-- LeaseNotFound                 404     lease_not_found
     +-- MethodNotAllowed                   405     method_not_allowed
     +-- RequestTimeout                     408     request_timeout
     +-- Conflict                           409
     |    +-- AlreadyExists                 409/412 already_exists (``current`` on 412)
     |    +-- LockHeld                      409     lock_held (``holder``)
     |    +-- NotOwner, LockNotHeld, StaleFence
     |    +-- TooManyKeys                   409     too_many_keys (a pattern delete)
     +-- PreconditionFailed                 412
     |    +-- RevisionMismatch              412     revision_mismatch (``current``)
     +-- PayloadTooLarge                    413     payload_too_large
     +-- UnsupportedMediaType               415     unsupported_media_type
     +-- RangeNotSatisfiable                416     range_not_satisfiable
     +-- Unprocessable                      422     validation_failed
     |    +-- ConstraintViolation, InvalidConstraint
     +-- InternalError                      500     internal_error (a bug of the service)
     +-- NotSupportedByBackend              501     not_supported_by_backend (see capabilities)
     +-- QuotaExceeded                      507     quota_exceeded
     +-- Unavailable                        (``retry_after`` seconds, or None)
     |    +-- BackendUnavailable            503     backend_unavailable
     |    +-- TooManyWatchers               503     too_many_watchers
     |    +-- TooManyWaiters                429     too_many_waiters
     |    +-- ConnectionFailed              -       unreachable: no answer (client side)
     +-- LockLost                           -       lock_lost: a held lock was lost (client side)
     +-- LeaseLost                          -       lease_lost: a held lease lapsed (client side)
     +-- WatchReset                         -       reset: a watch's resume point is gone
"""

from __future__ import annotations

from typing import Any


class CorkboardError(Exception):
    """An error answered by the service (or found by the client): status, code, detail."""

    status: int = 0
    code: str = "error"

    def __init__(
        self,
        detail: str,
        *,
        status: int | None = None,
        code: str | None = None,
        errors: Any = None,
        problem: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code
        self.errors = errors
        self.problem: dict[str, Any] = problem if problem is not None else {}
        self.headers: dict[str, str] = headers or {}

    def __str__(self) -> str:
        return f"{self.code}: {self.detail}"


class InvalidRequest(CorkboardError):
    status, code = 400, "invalid_request"


class InvalidKey(InvalidRequest):
    code = "invalid_key"


class InvalidPattern(InvalidRequest):
    code = "invalid_pattern"


class InvalidTTL(InvalidRequest):
    code = "invalid_ttl"


class Unauthorized(CorkboardError):
    status, code = 401, "unauthorized"


class Forbidden(CorkboardError):
    status, code = 403, "forbidden"


class NotFound(CorkboardError):
    status, code = 404, "not_found"


class LeaseNotFound(NotFound):
    """The lease was never granted, was revoked or has expired; nothing was written."""

    code = "lease_not_found"


class MethodNotAllowed(CorkboardError):
    status, code = 405, "method_not_allowed"


class RequestTimeout(CorkboardError):
    status, code = 408, "request_timeout"


class Conflict(CorkboardError):
    status, code = 409, "conflict"


class AlreadyExists(Conflict):
    """The thing exists already (409), or a create-only write found it (412, with
    ``current``)."""

    code = "already_exists"

    @property
    def current(self) -> Any:
        return self.problem.get("current")


class LockHeld(Conflict):
    """Another owner holds the lock (after waiting up to ``wait``); ``holder`` says who."""

    code = "lock_held"

    @property
    def holder(self) -> Any:
        return self.problem.get("holder")


class NotOwner(Conflict):
    code = "not_owner"


class LockNotHeld(Conflict):
    code = "lock_not_held"


class StaleFence(Conflict):
    """A fenced write whose token no longer holds its lock; nothing changed."""

    code = "stale_fence"


class TooManyKeys(Conflict):
    """A pattern delete matching more keys than the service deletes at once; nothing
    was deleted."""

    code = "too_many_keys"


class PreconditionFailed(CorkboardError):
    status, code = 412, "precondition_failed"

    @property
    def current(self) -> Any:
        """The current entry (a dict), or None when absent."""
        return self.problem.get("current")


class RevisionMismatch(PreconditionFailed):
    code = "revision_mismatch"


class PayloadTooLarge(CorkboardError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(CorkboardError):
    status, code = 415, "unsupported_media_type"


class RangeNotSatisfiable(CorkboardError):
    status, code = 416, "range_not_satisfiable"


class Unprocessable(CorkboardError):
    status, code = 422, "validation_failed"


class ConstraintViolation(Unprocessable):
    code = "constraint_violation"


class InvalidConstraint(Unprocessable):
    code = "invalid_constraint"


class InternalError(CorkboardError):
    """The service failed unexpectedly (a bug of the service, worth reporting)."""

    status, code = 500, "internal_error"


class NotSupportedByBackend(CorkboardError):
    """The service's backend does not offer this resource (yet); its
    ``/v1/capabilities`` lists what it does offer."""

    status, code = 501, "not_supported_by_backend"


class QuotaExceeded(CorkboardError):
    status, code = 507, "quota_exceeded"


class Unavailable(CorkboardError):
    """Try again later; ``retry_after`` is the server's hint in seconds, if any."""

    status, code = 503, "unavailable"

    @property
    def retry_after(self) -> float | None:
        return retry_after_seconds(self.headers.get("retry-after"))


class BackendUnavailable(Unavailable):
    code = "backend_unavailable"


class TooManyWatchers(Unavailable):
    code = "too_many_watchers"


class TooManyWaiters(Unavailable):
    status, code = 429, "too_many_waiters"


class ConnectionFailed(Unavailable):
    """No answer from the service: refused, reset, or timed out (status 0)."""

    status, code = 0, "unreachable"


class LockLost(CorkboardError):
    """A lock held by ``client.lock(...)`` expired or was taken before it was released."""

    code = "lock_lost"


class LeaseLost(CorkboardError):
    """A lease held by ``client.lease(...)`` lapsed (or was revoked) before the block
    ended: the keys and locks on it are gone."""

    code = "lease_lost"


class WatchReset(CorkboardError):
    """A watch's resume point is older than the namespace retains (or unknown to it):
    events may be missing, so the caller must resync (e.g. ``snapshot=True``)."""

    code = "reset"

    def __init__(self, detail: str, *, compacted_revision: int, current_revision: int) -> None:
        super().__init__(detail)
        self.compacted_revision = compacted_revision
        self.current_revision = current_revision


#: Every code the service answers with, and its exception class: the one table.
CODES: dict[str, type[CorkboardError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest, InvalidKey, InvalidPattern, InvalidTTL,
        Unauthorized, Forbidden,
        NotFound, LeaseNotFound,
        MethodNotAllowed, RequestTimeout,
        Conflict, AlreadyExists, LockHeld, NotOwner, LockNotHeld, StaleFence, TooManyKeys,
        RevisionMismatch,
        PayloadTooLarge, UnsupportedMediaType, RangeNotSatisfiable,
        Unprocessable, ConstraintViolation, InvalidConstraint,
        InternalError, NotSupportedByBackend, QuotaExceeded,
        BackendUnavailable, TooManyWatchers, TooManyWaiters,
    )
}


def _status_class(cls: type[CorkboardError]) -> type[CorkboardError]:
    """The most general class above ``cls`` with the same status (RevisionMismatch ->
    PreconditionFailed, BackendUnavailable -> Unavailable, LeaseNotFound -> NotFound)."""
    general = cls
    for base in cls.__mro__[1:]:
        if isinstance(base, type) and issubclass(base, CorkboardError) and (
            base is not CorkboardError and base.status == cls.status
        ):
            general = base
    return general


#: The fallback for an answer without a known code, derived from ``CODES``.
BY_STATUS: dict[int, type[CorkboardError]] = {
    cls.status: _status_class(cls) for cls in CODES.values()
}


def retry_after_seconds(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds only), or None."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def error_from_problem(
    status: int, problem: dict[str, Any], headers: dict[str, str] | None = None
) -> CorkboardError:
    """The typed exception of a problem document (or of a bare status)."""
    code = problem.get("code")
    cls = CODES.get(code) if isinstance(code, str) else None
    if cls is None:
        cls = BY_STATUS.get(status, CorkboardError)
    detail = problem.get("detail") or problem.get("title") or f"HTTP {status}"
    return cls(
        str(detail), status=status, code=code if isinstance(code, str) else None,
        errors=problem.get("errors"), problem=problem, headers=headers,
    )
