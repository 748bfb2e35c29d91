"""The parts the NATS backend does not have yet (issue 17's later stages): each of their
calls answers 501 ``not_supported_by_backend``, and /v1/capabilities leaves them out of
``supports``. Nothing is stored, so nothing is pretended: no lease exists."""

from __future__ import annotations

from typing import Any, TypeVar

from app.backends.parts.txn import LeaseStore, TxnStore
from app.errors import NotSupportedByBackend

#: What the NATS backend offers so far (the ``supports`` list of /v1/capabilities).
SUPPORTS = ("keys", "events", "watch", "ttl", "history", "locks", "sessions", "artifacts")

P = TypeVar("P")


def refusal(what: str) -> NotSupportedByBackend:
    return NotSupportedByBackend(
        f"The NATS backend does not support {what} yet; GET /v1/capabilities lists what "
        "it supports (see docs/nats.md)."
    )


def unsupported(part: type[P], what: str) -> P:
    """An instance of ``part`` whose every abstract method raises 501."""

    def method(name: str) -> Any:
        async def refuse(self: Any, *args: Any, **kwargs: Any) -> Any:
            raise refusal(what)

        refuse.__name__ = name
        return refuse

    names: frozenset[str] = getattr(part, "__abstractmethods__", frozenset())
    cls = type(f"Nats{part.__name__}Unsupported", (part,), {n: method(n) for n in names})
    instance: P = cls()
    return instance


def leases() -> LeaseStore:
    return unsupported(LeaseStore, "leases")  # type: ignore[type-abstract]


def txns() -> TxnStore:
    return unsupported(TxnStore, "transactions and pattern deletes")  # type: ignore[type-abstract]
