"""The Python client of Corkboard: ``Corkboard`` (sync) and ``AsyncCorkboard`` (asyncio).

    from corkboard.client import Corkboard

    with Corkboard("http://127.0.0.1:8000", ns="team-a") as cb:
        cb.put("config/mode", {"fast": True})
        cb.cas_loop("counter", lambda n: n + 1, default=0)
        with cb.lock("jobs/nightly", ttl=30):
            cb.put("reports/nightly", "done")      # fenced by the lock
        for item in cb.watch("config/*", since=0):
            print(item)

Every method and its errors: docs/client.md. The package depends on httpx and orjson
only and never imports the service.
"""

from corkboard.client._async.client import AsyncCorkboard
from corkboard.client._async.keys import MISSING
from corkboard.client._async.locks import AsyncLock
from corkboard.client._async.watch import AsyncWatch
from corkboard.client._sync.client import Corkboard
from corkboard.client._sync.locks import Lock
from corkboard.client._sync.watch import Watch
from corkboard.client.errors import (
    AlreadyExists,
    BackendUnavailable,
    Conflict,
    ConnectionFailed,
    ConstraintViolation,
    CorkboardError,
    Forbidden,
    InvalidConstraint,
    InvalidKey,
    InvalidPattern,
    InvalidRequest,
    InvalidTTL,
    LockHeld,
    LockLost,
    LockNotHeld,
    NotFound,
    NotOwner,
    PayloadTooLarge,
    PreconditionFailed,
    QuotaExceeded,
    RangeNotSatisfiable,
    RequestTimeout,
    RevisionMismatch,
    StaleFence,
    TooManyKeys,
    TooManyWaiters,
    TooManyWatchers,
    Unauthorized,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    WatchReset,
)
from corkboard.client.types import (
    Artifact,
    ArtifactInfo,
    BatchResult,
    Capabilities,
    Entry,
    Event,
    EventBatch,
    Fence,
    ImportResult,
    LockGrant,
    LockHolder,
    LockQueued,
    LockRelease,
    Page,
    Progress,
    Reset,
    Session,
    Synced,
    Variable,
    WatchItem,
)

__all__ = [
    "MISSING",
    "AlreadyExists",
    "Artifact",
    "ArtifactInfo",
    "AsyncCorkboard",
    "AsyncLock",
    "AsyncWatch",
    "BackendUnavailable",
    "BatchResult",
    "Capabilities",
    "Conflict",
    "ConnectionFailed",
    "ConstraintViolation",
    "Corkboard",
    "CorkboardError",
    "Entry",
    "Event",
    "EventBatch",
    "Fence",
    "Forbidden",
    "ImportResult",
    "InvalidConstraint",
    "InvalidKey",
    "InvalidPattern",
    "InvalidRequest",
    "InvalidTTL",
    "Lock",
    "LockGrant",
    "LockHeld",
    "LockHolder",
    "LockLost",
    "LockNotHeld",
    "LockQueued",
    "LockRelease",
    "NotFound",
    "NotOwner",
    "Page",
    "PayloadTooLarge",
    "PreconditionFailed",
    "Progress",
    "QuotaExceeded",
    "RangeNotSatisfiable",
    "RequestTimeout",
    "Reset",
    "RevisionMismatch",
    "Session",
    "StaleFence",
    "Synced",
    "TooManyKeys",
    "TooManyWaiters",
    "TooManyWatchers",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "Variable",
    "Watch",
    "WatchItem",
    "WatchReset",
]
