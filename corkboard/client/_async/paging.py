"""A listing's items, page after page: what every ``iter_*`` of the client returns."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypeVar

from corkboard.client.types import AsyncPageFetch

T = TypeVar("T")


async def every(fetch: AsyncPageFetch[T]) -> AsyncIterator[T]:
    """Each item of the pages ``fetch`` gives, from the first page on, following
    ``next_cursor`` until a page has none."""
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in page.items:
            yield item
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
