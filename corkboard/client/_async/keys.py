"""Keys (API.md section 2): read, write with ETag preconditions, server-side patch and
increment, touch, history, paged listing, and the compare-and-swap loop."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from typing import Any

from corkboard.client._async.base import AsyncBase
from corkboard.client._async.paging import every
from corkboard.client._concurrency import async_sleep
from corkboard.client._protocol import (
    JSON_PATCH,
    MERGE_PATCH,
    Call,
    condition_headers,
    dumps,
    duration_param,
    key_path,
    params,
)
from corkboard.client.errors import AlreadyExists, NotFound, PreconditionFailed
from corkboard.client.txn import lease_id
from corkboard.client.types import Duration, Entry, LeaseRef, Page

#: ``cas_loop``'s default when the key is missing: raise NotFound.
MISSING: Any = object()
CAS_ATTEMPTS = 32


def _entry_of(problem_current: Any) -> Entry | None:
    return Entry.from_json(problem_current) if isinstance(problem_current, dict) else None


class AsyncKeys(AsyncBase):
    async def get(self, key: str, *, revision: int | None = None) -> Entry:
        """The key's entry (or its value at ``revision`` while kept); NotFound if absent."""
        data = await self._json(Call.read(f"/v1/kv/{key_path(key)}", params(revision=revision)))
        return Entry.from_json(data)

    async def get_value(self, key: str, default: Any = None) -> Any:
        """The key's value, or ``default`` when it does not exist."""
        try:
            return (await self.get(key)).value
        except NotFound:
            return default

    async def put(
        self, key: str, value: Any, *, ttl: Duration | None = None,
        if_revision: int | None = None, lease: LeaseRef | None = None,
    ) -> Entry:
        """Store ``value`` (any JSON). ``if_revision=N`` writes only if the key is still at
        revision N (else RevisionMismatch); ``if_revision=0`` only if it does not exist
        (else AlreadyExists). ``ttl``: seconds or '30s'; absent, no expiry. ``lease``:
        the key lives as long as that lease (LeaseNotFound if it has ended; not with
        ``ttl``); a put without it takes the key off its lease."""
        call = Call.write(
            "PUT", f"/v1/kv/{key_path(key)}", raw=dumps(value),
            params=params(ttl=duration_param(ttl),
                          lease=lease_id(lease) if lease is not None else None),
            headers=condition_headers(if_revision), retry=True,
        )
        return Entry.from_json(await self._json(call))

    async def patch(
        self, key: str, *, merge: Any = None, json_patch: list[dict[str, Any]] | None = None,
        initial: Any = MISSING, ttl: Duration | None = None, if_revision: int | None = None,
        lease: LeaseRef | None = None,
    ) -> Entry:
        """Update atomically on the server with a merge patch (RFC 7396) or a JSON patch
        (RFC 6902; a failed ``test`` is RevisionMismatch). ``initial`` is the starting value
        when the key is missing (else NotFound). Without ``ttl`` or ``lease`` the key keeps
        its expiry and lease."""
        if (json_patch is None) == (merge is None):
            raise ValueError("give exactly one of merge= or json_patch=")
        body, media = (json_patch, JSON_PATCH) if json_patch is not None else (merge, MERGE_PATCH)
        call = Call.write(
            "PATCH", f"/v1/kv/{key_path(key)}", raw=dumps(body), content_type=media,
            params=params(
                initial=dumps(initial).decode() if initial is not MISSING else None,
                ttl=duration_param(ttl), lease=lease_id(lease) if lease is not None else None,
            ),
            headers=condition_headers(if_revision),
        )
        return Entry.from_json(await self._json(call))

    async def increment(
        self, key: str, by: float = 1, *, initial: float = 0, ttl: Duration | None = None
    ) -> Entry:
        """Add ``by`` atomically (created from ``initial`` when missing; ``ttl`` applies
        then). Never retried: a repeat would count twice."""
        body: dict[str, Any] = {"by": by, "initial": initial}
        if ttl is not None:
            body["ttl"] = ttl
        call = Call.write("POST", f"/v1/kv/{key_path(key)}/increment", body)
        return Entry.from_json(await self._json(call))

    async def touch(self, key: str, ttl: Duration) -> Entry:
        """Reset the key's expiry (0: none) without changing its value."""
        call = Call.write("POST", f"/v1/kv/{key_path(key)}/touch", {"ttl": ttl}, retry=True)
        return Entry.from_json(await self._json(call))

    async def delete(self, key: str, *, if_revision: int | None = None) -> None:
        """Delete the key (also fine when it does not exist)."""
        call = Call.write("DELETE", f"/v1/kv/{key_path(key)}",
                          headers=condition_headers(if_revision or None), retry=True)
        await self._send(call)

    async def history(self, key: str) -> list[Entry]:
        """The kept revisions of the key, newest first."""
        data = await self._json(Call.read(f"/v1/kv/{key_path(key)}/history"))
        return [Entry.from_json(e) for e in data["items"]]

    async def list(
        self, pattern: str = "*", *, values: bool = True, limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Entry]:
        """One page of keys matching ``pattern``, in key order."""
        data = await self._json(Call.read(
            "/v1/kv", params(pattern=pattern, values=values, limit=limit, cursor=cursor)
        ))
        return Page([Entry.from_json(e) for e in data["items"]], data.get("next_cursor"),
                    data.get("revision"))

    def iter_keys(
        self, pattern: str = "*", *, values: bool = True, page_size: int | None = None
    ) -> AsyncIterator[Entry]:
        """Every key matching ``pattern``, page after page (each exactly once while it
        exists throughout)."""
        return every(lambda cursor: self.list(
            pattern, values=values, limit=page_size, cursor=cursor))

    async def cas_loop(
        self, key: str, fn: Callable[[Any], Any], *, default: Any = MISSING,
        ttl: Duration | None = None, attempts: int = CAS_ATTEMPTS,
    ) -> Entry:
        """Read the key, compute ``fn(value)``, write it only if the key did not change
        meanwhile (If-Match), and start again when it did; at most ``attempts`` rounds,
        then the last RevisionMismatch is raised. A missing key gives ``fn(default)``,
        created only if still absent (NotFound without a default)."""
        current: Entry | None
        try:
            current = await self.get(key)
        except NotFound:
            if default is MISSING:
                raise
            current = None
        for attempt in range(attempts):
            value = default if current is None else current.value
            revision = 0 if current is None else current.revision
            try:
                return await self.put(key, fn(value), ttl=ttl, if_revision=revision)
            except (PreconditionFailed, AlreadyExists) as exc:
                if attempt + 1 >= attempts:
                    raise
                # The 412 carries the entry that won: no second read needed.
                current = _entry_of(exc.current)
                if current is None and default is MISSING:
                    raise NotFound(f"Key {key!r} was deleted during cas_loop.") from exc
                await async_sleep(random.random() * min(0.002 * 2**attempt, 0.05))
        raise AssertionError("unreachable")
