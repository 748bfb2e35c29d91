# Generated from _async/paging.py by scripts/unasync.py: do not edit.
"""A listing's items, page after page: what every ``iter_*`` of the client returns."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

from corkboard.client.types import PageFetch

T = TypeVar("T")


def every(fetch: PageFetch[T]) -> Iterator[T]:
    """Each item of the pages ``fetch`` gives, from the first page on, following
    ``next_cursor`` until a page has none."""
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        for item in page.items:
            yield item
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
