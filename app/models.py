"""Request and response schemas shared by the routers and the generated ``openapi/``.

Responses are serialized once with orjson and not re-validated; these models document
them and validate the small JSON request bodies.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt

Duration = StrictFloat | StrictInt | str
#: An integer JSON storage can hold (orjson encodes 64-bit integers only).
Int64 = Annotated[StrictInt, Field(ge=-(2**63), le=2**64 - 1)]


class Problem(BaseModel):
    """An RFC 9457 problem document; ``code`` is the stable machine-readable code."""

    type: str = "about:blank"
    status: int
    title: str
    detail: str
    code: str
    errors: Any = None
    current: Any = Field(None, description="On 412: the current entry, or null when absent")


class KeyEntryModel(BaseModel):
    key: str
    value: Any = Field(None, description="Any JSON value (omitted in listings with values=false)")
    revision: int = Field(description="Namespace revision of the key's last write; its ETag")
    created_revision: int
    version: int = Field(description="Writes since the key was created, from 1")
    created_at: str
    modified_at: str
    expires_at: str | None


class KeyList(BaseModel):
    items: list[KeyEntryModel]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null at the end"
    )
    revision: int = Field(description="The namespace's revision when the page was read")


class KeyHistory(BaseModel):
    items: list[KeyEntryModel] = Field(description="Kept revisions, newest first")


class IncrementRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Any JSON integer stays an exact integer here: the shared increment rule
    # (app/domain/numbers.py) refuses sums it cannot keep exact, on every backend.
    by: StrictInt | StrictFloat = Field(1, description="Amount to add (may be negative)")
    initial: StrictInt | StrictFloat = Field(
        0, description="Starting value when the key is missing"
    )
    ttl: Duration | None = Field(None, description="Expiry applied only when the key is created")


class TouchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ttl: Duration = Field(description="New time to live from now; 0 removes the expiry")


class EventList(BaseModel):
    events: list[dict[str, Any]]
    revision: int = Field(description="Pass as ?since= to continue")


class Limits(BaseModel):
    """Every limit a caller meets (API.md section 9), as configured for this deployment."""

    model_config = ConfigDict(extra="forbid")

    max_value_bytes: int = Field(description="Largest key value, variable value or state map")
    max_request_bytes: int = Field(description="Largest request body (other than below)")
    max_snapshot_bytes: int = Field(description="Largest session snapshot or batch write body")
    max_artifact_bytes: int = Field(description="Largest artifact")
    max_key_bytes: int = Field(description="Longest key, lock, artifact or id")
    max_ttl_seconds: int = Field(description="Longest ttl")
    max_list_limit: int = Field(description="Largest page of a listing (`limit`)")
    max_events_limit: int = Field(description="Largest `limit` of GET /v1/events")
    max_poll_wait_seconds: float = Field(description="Longest `wait` of GET /v1/events")
    max_lock_wait_seconds: float = Field(description="Longest `wait` of a lock acquire")
    key_history: int = Field(description="Revisions kept per key")
    event_retention: int = Field(description="Events kept per namespace")
    event_retention_bytes: int = Field(description="Bytes of events kept per namespace")
    namespace_max_keys: int = Field(description="Live keys per namespace (507 beyond)")
    namespace_max_bytes: int = Field(description="Stored bytes per namespace (507 beyond)")
    namespace_max_leases: int = Field(description="Live leases per namespace (507 beyond)")
    namespace_max_locks: int = Field(
        description="Locks held at once per namespace, namespace and session locks (507 beyond)"
    )
    lock_max_waiters: int = Field(description="Waiters per lock (429 beyond)")
    lock_max_pending: int = Field(description="Pending entries per lock")
    max_watchers: int = Field(description="Open watch streams per process (503 beyond)")
    max_patch_ops: int = Field(description="Operations of a JSON Patch")
    max_txn_ops: int = Field(
        description="Compares, and operations per branch, of one transaction (POST /v1/txn)"
    )
    max_pattern_delete_keys: int = Field(
        description="Keys one DELETE /v1/kv?pattern= removes (409 too_many_keys beyond): "
        "10,000; on NATS min(10,000, max_batch - 2) of the backend URL's ?max_batch="
    )
    max_json_depth: int = Field(description="Levels of nesting of any JSON accepted (422 beyond)")
    max_number_digits: int = Field(
        description="Digits of a number in a header, path or query parameter (400 beyond)"
    )
    max_pattern_length: int = Field(description="Longest string `pattern` constraint (RE2)")
    redis_wait_replicas: int = Field(
        description="Redis replicas that acknowledge each write before it is answered (0: none)"
    )


class Capabilities(BaseModel):
    backend: str
    artifact_store: str
    atomic_updates: bool
    streaming: bool
    persistence: bool
    distribution: bool
    limits: Limits
    supports: list[str] = Field(
        description="What the backend offers: keys, events, watch, ttl, history, locks, "
        "sessions, artifacts, leases, txn; a resource it lacks answers 501 "
        "not_supported_by_backend"
    )
    version: str


class Health(BaseModel):
    status: str


class ArtifactModel(BaseModel):
    """An artifact's metadata: the PUT answer, a listing item, an event's value."""

    key: str
    size: int = Field(description="Length of the content in bytes")
    sha256: str = Field(description="Lowercase hex SHA-256 of the content; the quoted ETag")
    content_type: str = Field(description="As uploaded; application/octet-stream by default")
    created_at: str = Field(description="When this version was stored")
    expires_at: str | None = Field(description="When it expires (?ttl=), or null")
    revision: int = Field(description="Namespace revision of this version's artifact.put")


class ArtifactList(BaseModel):
    items: list[ArtifactModel]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page; null at end")
    revision: int = Field(description="The namespace's revision when the page was read")
