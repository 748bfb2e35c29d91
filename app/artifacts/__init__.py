"""Artifact stores, chosen by URL scheme; a store's module is imported only when its
scheme is asked for (``memory://``, ``redis://``/``rediss://``/``unix://`` and
``redis+cluster://``/``rediss+cluster://``, ``nats://``, ``file:///path``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from app.artifacts.base import BlobStore
from app.backends.base import Backend
from app.settings import Settings


class UnknownArtifactStore(ValueError):
    """The URL names no artifact store this service has, or a bad location for one."""


def artifacts_url(settings: Settings) -> str:
    """The artifact store's URL: ``CORKBOARD_ARTIFACTS``, by default the backend's."""
    return settings.artifacts or settings.backend


def store_from_url(url: str, settings: Settings, backend: Backend | None = None) -> BlobStore:
    """The BlobStore for ``url``. A Redis store at the backend's own URL shares the
    backend's connection pool."""
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        from app.artifacts.memory import MemoryBlobStore

        return MemoryBlobStore()
    if scheme in ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"):
        from app.artifacts.redis import RedisBlobStore
        from app.backends.redis import RedisBackend

        if isinstance(backend, RedisBackend) and url == backend.url:
            return RedisBlobStore(
                backend.nodes, chunk_bytes=settings.artifact_chunk_bytes, url=url
            )
        return RedisBlobStore.from_url(
            url,
            chunk_bytes=settings.artifact_chunk_bytes,
            timeout=settings.backend_timeout_seconds,
            max_connections=settings.redis_max_connections,
            wait_replicas=settings.redis_wait_replicas,
        )
    if scheme == "nats":
        return _nats_store(url, settings, backend)
    if scheme == "file":
        from app.artifacts.file import FileBlobStore, InvalidFileStoreURL

        try:
            return FileBlobStore.from_url(url)
        except InvalidFileStoreURL as exc:
            raise UnknownArtifactStore(str(exc)) from exc
    raise UnknownArtifactStore(
        f"unknown artifact store URL {url!r}: use memory://, redis://host:6379/0 "
        "(also rediss://, unix://, redis+cluster://h1:7000,h2:7001 and rediss+cluster://) "
        "or file:///absolute/directory"
    )


def _nats_store(url: str, settings: Settings, backend: Backend | None) -> BlobStore:
    """A JetStream Object Store; on the NATS backend's own servers (and credentials) it
    shares the backend's connection, whatever ``?bucket=`` or ``?replicas=`` it adds (the
    default when ``CORKBOARD_BACKEND`` is ``nats://`` and ``CORKBOARD_ARTIFACTS`` is unset,
    as Redis shares its pool)."""
    from app.artifacts.nats import NatsBlobStore, bucket_of
    from app.backends.nats import NatsBackend, replicas_of, servers_of

    try:
        servers, replicas, bucket = servers_of(url), replicas_of(url), bucket_of(url)
    except ValueError as exc:
        raise UnknownArtifactStore(str(exc)) from exc
    shared = None
    if isinstance(backend, NatsBackend) and servers == servers_of(backend.url):
        store = backend.store
        shared = lambda: store.nc  # noqa: E731
    return NatsBlobStore(
        servers, url=url, bucket=bucket, replicas=replicas,
        chunk_bytes=settings.artifact_chunk_bytes, timeout=settings.backend_timeout_seconds,
        shared=shared,
    )
