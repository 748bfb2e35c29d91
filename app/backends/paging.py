"""Ordered paging over a sorted list of names, for the in-memory listings.

The names are a plain sorted ``list`` or a ``SortedList`` (sortedcontainers: O(log n)
insert and delete, used where a namespace may hold millions of names); both are read
from the cursor on, never from the start.

The same rule as ``scan_index`` in ``lua/common.lua``, so both backends page alike: the
names after the cursor that start with the pattern's prefix are examined in order; a
page ends when it holds ``limit`` rows and another one exists (the cursor is its last
row), or when ``LIST_SCAN_BUDGET`` names were examined (the cursor is the last name
examined, even on an empty page, so a sparse pattern never hides later matches).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import TypeVar

from sortedcontainers import SortedList

from app.syntax import Pattern

#: Names examined by one listing call at most, so a sparse pattern cannot stall the loop.
LIST_SCAN_BUDGET = 20_000

T = TypeVar("T")


def names_from(order: list[str] | SortedList[str], prefix: str, after: str | None
               ) -> Iterator[str]:
    """The names of ``order`` from ``prefix`` on, and after ``after`` if given.

    A ``SortedList`` is read with ``irange`` (its sublists from a bisection) and never by
    position: a positional read builds the list's index of sublist lengths, which every
    later insert then updates in Python (~1 us a name at 10^6 names) and every sublist
    split drops, for the next listing to build again (O(sublists))."""
    # The names start past the cursor or at the prefix, whichever comes later.
    bound, past_cursor = (after, True) if after is not None and after >= prefix else (prefix, False)
    if isinstance(order, SortedList):
        return order.irange(minimum=bound, inclusive=(not past_cursor, True))
    start = (bisect.bisect_right if past_cursor else bisect.bisect_left)(order, bound)
    return (order[i] for i in range(start, len(order)))


def page_sorted(
    order: list[str] | SortedList[str],
    pattern: Pattern,
    after: str | None,
    limit: int,
    row: Callable[[str], T | None],
    budget: int | None = None,
) -> tuple[list[T], str | None]:
    """The rows (``row(name)``, None to skip a name) of one page, and the next cursor."""
    budget = LIST_SCAN_BUDGET if budget is None else budget
    prefix = pattern.prefix
    items: list[T] = []
    last: str | None = None
    last_row: str | None = None
    for examined, name in enumerate(names_from(order, prefix, after)):
        if not name.startswith(prefix):
            break
        if examined >= budget:
            return items, last
        if pattern.matches(name):
            found = row(name)
            if found is not None:
                if len(items) == limit:
                    return items, last_row
                items.append(found)
                last_row = name
        if pattern.exact:
            break  # the one name it can be comes first
        last = name
    return items, None
