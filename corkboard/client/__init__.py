"""The Python client of Corkboard: ``Corkboard`` (sync) and ``AsyncCorkboard`` (asyncio).

    from corkboard.client import Compare, Corkboard, Op

    with Corkboard("http://127.0.0.1:8000", ns="team-a") as cb:
        cb.put("config/mode", {"fast": True})
        cb.cas_loop("counter", lambda n: n + 1, default=0)
        with cb.lock("jobs/nightly", ttl=30):
            cb.put("reports/nightly", "done")      # fenced by the lock
        cb.txn(compare=[Compare.absent("leader")], success=[Op.put("leader", "me")])
        with cb.lease(10, id="agent-7") as lease:  # kept alive, revoked on exit
            cb.put("agents/agent-7", {"role": "planner"}, lease=lease)
        for item in cb.watch("config/*", since=0):
            print(item)

Every method and its errors: docs/client.md. The package depends on httpx and orjson
only and never imports the service.
"""

from corkboard.client._async.client import AsyncCorkboard
from corkboard.client._async.keys import MISSING
from corkboard.client._async.leases import AsyncLease
from corkboard.client._async.locks import AsyncLock
from corkboard.client._async.watch import AsyncWatch
from corkboard.client._sync.client import Corkboard
from corkboard.client._sync.leases import Lease
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
    InternalError,
    InvalidConstraint,
    InvalidKey,
    InvalidPattern,
    InvalidRequest,
    InvalidTTL,
    LeaseLost,
    LeaseNotFound,
    LockHeld,
    LockLost,
    LockNotHeld,
    MethodNotAllowed,
    NotFound,
    NotOwner,
    NotSupportedByBackend,
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
from corkboard.client.txn import Compare, Op
from corkboard.client.types import (
    Artifact,
    ArtifactInfo,
    BatchResult,
    Capabilities,
    Deleted,
    Entry,
    Event,
    EventBatch,
    Fence,
    ImportResult,
    LeaseDetail,
    LeaseInfo,
    LeaseLock,
    LockGrant,
    LockHolder,
    LockQueued,
    LockRelease,
    Page,
    PatternDeleted,
    Progress,
    Reset,
    Session,
    Synced,
    TxnOpResult,
    TxnResult,
    Variable,
    WatchItem,
)

__all__ = [
    "MISSING",
    "AlreadyExists",
    "Artifact",
    "ArtifactInfo",
    "AsyncCorkboard",
    "AsyncLease",
    "AsyncLock",
    "AsyncWatch",
    "BackendUnavailable",
    "BatchResult",
    "Capabilities",
    "Compare",
    "Conflict",
    "ConnectionFailed",
    "ConstraintViolation",
    "Corkboard",
    "CorkboardError",
    "Deleted",
    "Entry",
    "Event",
    "EventBatch",
    "Fence",
    "Forbidden",
    "ImportResult",
    "InternalError",
    "InvalidConstraint",
    "InvalidKey",
    "InvalidPattern",
    "InvalidRequest",
    "InvalidTTL",
    "Lease",
    "LeaseDetail",
    "LeaseInfo",
    "LeaseLock",
    "LeaseLost",
    "LeaseNotFound",
    "Lock",
    "LockGrant",
    "LockHeld",
    "LockHolder",
    "LockLost",
    "LockNotHeld",
    "LockQueued",
    "LockRelease",
    "MethodNotAllowed",
    "NotFound",
    "NotOwner",
    "NotSupportedByBackend",
    "Op",
    "Page",
    "PatternDeleted",
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
    "TxnOpResult",
    "TxnResult",
    "Unauthorized",
    "Unavailable",
    "Unprocessable",
    "UnsupportedMediaType",
    "Variable",
    "Watch",
    "WatchItem",
    "WatchReset",
]
