"""The one bound every NATS message has: the server's ``max_payload`` (1 MiB by default),
which counts the message's headers as well as its data. A publish over it is not an
error of that publish: the server closes the connection, failing every request sharing
it. So a message that would not fit is refused before it is sent (docs/nats.md)."""

from __future__ import annotations

from app.errors import PayloadTooLarge

#: The first line of a NATS message's headers; each header is ``name: value\r\n``, and a
#: blank line ends them.
HEADER_LINE = b"NATS/1.0\r\n"


def message_size(data: bytes, headers: dict[str, str]) -> int:
    """The bytes ``max_payload`` counts of a message: its headers and its data."""
    if not headers:
        return len(data)
    return len(data) + len(HEADER_LINE) + 2 + sum(
        len(name.encode()) + len(value.encode()) + 4 for name, value in headers.items()
    )


def check_size(limit: int, subject: str, data: bytes, headers: dict[str, str]) -> None:
    """Refuse (413, nothing written) a message larger than ``limit``."""
    size = message_size(data, headers)
    if size > limit:
        raise PayloadTooLarge(
            f"The message for {subject!r} would take {size} bytes, more than the NATS "
            f"server's largest message ({limit} bytes, its max_payload: see "
            "docs/nats.md). Nothing was written."
        )
