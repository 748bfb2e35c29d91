"""Choose a backend by URL scheme, importing a backend's module only when it is asked for."""

from __future__ import annotations

from urllib.parse import urlsplit

from app.backends.base import Backend
from app.domain.bounds import Bounds
from app.settings import Settings

SCHEMES = ("memory", "redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "nats")


class UnknownBackend(ValueError):
    """The URL names no backend this service has."""


def bounds_of(settings: Settings) -> Bounds:
    """The per-namespace bounds the settings ask for."""
    return Bounds(
        event_retention=settings.event_retention,
        event_retention_bytes=settings.event_retention_bytes,
        max_keys=settings.namespace_max_keys,
        max_bytes=settings.namespace_max_bytes,
        lock_max_waiters=settings.lock_max_waiters,
        max_leases=settings.namespace_max_leases,
        max_locks=settings.namespace_max_locks,
    )


def backend_from_url(url: str, settings: Settings) -> Backend:
    """A Backend for ``memory://``, ``redis://``, ``rediss://``, ``unix://``, and Redis
    Cluster's ``redis+cluster://h1:7000,h2:7001`` or ``rediss+cluster://`` URLs, and NATS
    JetStream's ``nats://h1:4222[,h2:4222]``."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from app.backends.memory import MemoryBackend

        return MemoryBackend(key_history=settings.key_history, bounds=bounds_of(settings))
    if scheme == "nats":
        from app.backends.nats import NatsBackend

        try:
            return NatsBackend(
                url, timeout=settings.backend_timeout_seconds, key_history=settings.key_history,
                event_retention=settings.event_retention,
                lock_max_waiters=settings.lock_max_waiters,
                max_keys=settings.namespace_max_keys, max_bytes=settings.namespace_max_bytes,
                event_retention_bytes=settings.event_retention_bytes,
                max_leases=settings.namespace_max_leases,
                max_locks=settings.namespace_max_locks,
            )
        except ValueError as exc:
            raise UnknownBackend(f"invalid backend URL: {exc}") from exc
    if scheme in SCHEMES[1:-1]:
        from app.backends.redis import RedisBackend

        try:
            return RedisBackend.from_url(
                url,
                timeout=settings.backend_timeout_seconds,
                max_connections=settings.redis_max_connections,
                key_history=settings.key_history,
                bounds=bounds_of(settings),
                wait_replicas=settings.redis_wait_replicas,
            )
        except ValueError as exc:  # a malformed URL (redis-py's or a cluster's)
            raise UnknownBackend(f"invalid backend URL: {exc}") from exc
    raise UnknownBackend(
        f"unknown backend URL {url!r}: use memory:// (embedded) or redis://host:6379/0 "
        "(also rediss:// and unix://), or a Redis Cluster: redis+cluster://h1:7000,h2:7001 "
        "(also rediss+cluster://), or NATS JetStream: nats://h1:4222[,h2:4222]"
    )
