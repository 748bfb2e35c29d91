"""Service settings: one pydantic-settings class read from ``CORKBOARD_*`` variables.

Settings are passed into ``create_app(settings)``; nothing reads the environment later.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of the service; the README's configuration table mirrors this class."""

    model_config = SettingsConfigDict(env_prefix="CORKBOARD_", extra="ignore")

    backend: str = Field(
        "memory://", description="State backend URL: memory://, redis://, rediss://, "
        "redis+cluster://h1:7000,h2:7001, rediss+cluster://, nats://h1:4222[,h2:4222]",
    )
    artifacts: str | None = Field(
        None,
        description="Artifact store URL (memory://, redis://, nats://, file:///path); "
        "default: backend",
    )
    host: str = Field("127.0.0.1", description="Address `corkboard serve` binds")
    port: int = Field(8000, ge=0, le=65535, description="Port `corkboard serve` binds")
    workers: int = Field(1, ge=1, le=64, description="Worker processes (Redis backend only for >1)")

    key_history: int = Field(10, ge=1, le=1000, description="Revisions kept per key")
    event_retention: int = Field(
        100_000, ge=10, le=10_000_000, description="Events kept per namespace for resume"
    )
    event_retention_bytes: int = Field(
        64 * 1_048_576, ge=65_536,
        description="Bytes of events kept per namespace for resume (older ones are compacted)",
    )
    namespace_max_keys: int = Field(
        1_000_000, ge=1, description="Live keys per namespace; beyond, 507 quota_exceeded"
    )
    namespace_max_bytes: int = Field(
        1_073_741_824, ge=1024,
        description="Bytes of values, history, variables and state maps per namespace; "
        "beyond, 507 quota_exceeded",
    )
    namespace_max_leases: int = Field(
        100_000, ge=1, le=10_000_000,
        description="Live leases per namespace; beyond, 507 quota_exceeded",
    )
    namespace_max_locks: int = Field(
        100_000, ge=1, le=10_000_000,
        description="Locks held at once per namespace (namespace and session locks); "
        "beyond, 507 quota_exceeded",
    )
    lock_max_waiters: int = Field(
        1000, ge=1, le=100_000,
        description="Callers waiting on one lock at once; beyond, 429 too_many_waiters",
    )
    max_patch_ops: int = Field(
        1000, ge=1, le=100_000, description="Operations in one JSON Patch"
    )
    max_txn_ops: int = Field(
        128, ge=1, le=10_000,
        description="Compares, and ops per branch, in one transaction (POST /v1/txn)",
    )
    max_value_bytes: int = Field(1_048_576, ge=1, description="Largest key value, in bytes")
    max_artifact_bytes: int = Field(67_108_864, ge=1, description="Largest artifact, in bytes")
    max_snapshot_bytes: int = Field(
        67_108_864, ge=1, description="Largest session snapshot import or batch write, in bytes"
    )
    max_list_limit: int = Field(1000, ge=1, le=100_000, description="Largest page for listings")
    lock_max_pending: int = Field(
        10_000, ge=1, le=1_000_000, description="Most queued entries a lock's pending list holds"
    )
    heartbeat_seconds: float = Field(15.0, gt=0, le=300, description="SSE heartbeat interval")
    max_watchers: int = Field(
        10_000, ge=1, le=1_000_000,
        description="Open watch streams and long polls per process; beyond, 503 too_many_watchers",
    )
    watch_queue_size: int = Field(
        4096, ge=16, le=1_000_000,
        description="Events a watcher may fall behind before its stream ends with `overflow`",
    )
    watch_progress_seconds: float = Field(
        15.0, gt=0, le=3600, description="Quiet time after which a stream gets `progress`"
    )
    watch_send_timeout_seconds: float = Field(
        30.0, gt=0, le=600, description="Streams whose client takes longer to accept data end"
    )
    watch_retry_ms: int = Field(
        1000, ge=0, le=600_000, description="`retry:` hint sent when the server ends a stream"
    )
    gc_threshold: int = Field(
        10_000, ge=0, le=10_000_000,
        description="Allocations between young garbage collections (0: Python's 700); "
                    "higher avoids ~100 ms pauses with many open streams",
    )
    debug_endpoints: bool = Field(
        False, description="Serve GET /debug/watch (task and watcher counts) for diagnostics"
    )
    sweep_interval_seconds: float = Field(
        0.25, gt=0, le=5, description="How often deadlines (TTLs) are checked"
    )
    backend_timeout_seconds: float = Field(
        2.0, gt=0, le=60, description="Timeout for one backend call; then 503"
    )
    redis_max_connections: int = Field(
        64, ge=2, description="Redis connection pool size (on a cluster: per master)"
    )
    redis_wait_replicas: int = Field(
        0, ge=0, le=16,
        description="Replicas that must confirm every write (Redis WAIT, within half of "
        "CORKBOARD_BACKEND_TIMEOUT_SECONDS) before it is acknowledged; else 503",
    )
    cors_origins: str = Field("", description="Comma list of origins allowed by CORS")
    tokens: str | None = Field(None, description="JSON list of access tokens")
    tokens_file: str | None = Field(None, description="Path to a JSON file of access tokens")
    require_tokens: bool = Field(
        False, description="Refuse to start without tokens (for production)"
    )
    max_request_bytes: int = Field(
        8 * 1_048_576, ge=1024, description="Largest request body other than an artifact"
    )
    log_level: str = Field("info", description="Log level")
    log_format: str = Field("json", pattern="^(json|text)$", description="json or text logs")

    # -- artifacts ---
    artifact_chunk_bytes: int = Field(
        262_144, ge=4096, le=8_388_608,
        description="Chunk size of blobs in a Redis or NATS artifact store",
    )
    artifact_grace_seconds: float = Field(
        300.0, ge=0, le=86_400,
        description="How long replaced or deleted artifact bytes stay readable for downloads "
        "already under way (Redis and NATS artifact stores; files and memory need no grace)",
    )
    artifact_upload_timeout_seconds: float = Field(
        3600.0, gt=0, le=7 * 86_400,
        description="Longest an artifact upload may take (else 408); bytes of uploads "
        "abandoned by a crashed server are removed after twice this",
    )
    artifact_gc_interval_seconds: float = Field(
        1.0, gt=0, le=300,
        description="How often replaced, deleted and abandoned artifact bytes are removed",
    )
