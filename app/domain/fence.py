"""Fencing: a write that applies only while a lock's token still holds it."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import StaleFence


@dataclass(frozen=True, slots=True)
class Fence:
    """Fence-Lock/Fence-Token: the write applies only while ``token`` holds the lock.

    ``scope`` is "" for namespace locks, or a session id for session-scoped locks.
    """

    name: str
    token: int
    scope: str = ""

    def stale(self) -> StaleFence:
        """The 409 for a write this fence refused."""
        return StaleFence(
            f"Fence token {self.token} does not hold lock {self.name!r}; nothing was written."
        )

    @staticmethod
    def script_args(fence: Fence | None) -> list[str]:
        """The three Lua arguments fence_holds(scope, name, token) reads ('' = no fence)."""
        if fence is None:
            return ["", "", ""]
        return [fence.scope, fence.name, str(fence.token)]
