"""The hot path's formatters against the plain code they replace, output byte for byte."""

from __future__ import annotations

import random
import re
import time

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from app.grammar import MAX_KEY_BYTES
from app.observability import AccessLog
from app.syntax import KV_ACTIONS, LOCK_ACTIONS, _is_sane_key, iso_ms


def _iso_ms_plain(ms: int) -> str:
    sec, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:03d}Z"


def test_iso_ms_is_the_plain_format() -> None:
    rng = random.Random(15)
    now = time.time_ns() // 1_000_000
    cases = [0, 1, 999, 1000, 1001, -1, -999, -1000, now, 253_402_300_799_999]
    cases += [rng.randrange(0, 4_102_444_800_000) for _ in range(3000)]
    cases += [now + i for i in range(-50, 50)]
    # around midnights (the date and the time of day are formatted apart), leap days
    # (2000-02-29, 2024-02-29) and a century that is no leap year (2100-02-28 -> 03-01)
    days = [rng.randrange(-1000, 80_000) for _ in range(200)] + [11_016, 19_782, 47_541]
    cases += [day * 86_400_000 + delta for day in days for delta in (-1, 0, 1, 86_399_999)]
    for ms in cases * 2:  # the second time from the cache
        assert iso_ms(ms) == _iso_ms_plain(ms), ms


def _is_sane_key_plain(key: str, actions: frozenset[str]) -> bool:
    """The key rules as API.md words them, segment by segment."""
    if not key or len(key.encode()) > MAX_KEY_BYTES or key.startswith("/"):
        return False
    if re.fullmatch(r"[A-Za-z0-9._:/@=+-]+", key) is None:
        return False
    segments = key.split("/")
    return "" not in segments and ".." not in segments and segments[-1] not in actions


_PIECES = st.sampled_from(["/", ".", "..", "a", "Z9", "history", "release", "touch",
                           "-", "@=+:", "*", " ", "é", "\n", "x" * 200])


@settings(max_examples=1500, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join),
       st.sampled_from([frozenset(), KV_ACTIONS, LOCK_ACTIONS]))
def test_the_remembered_key_check_is_the_plain_rules(key: str, actions: frozenset[str]) -> None:
    assert _is_sane_key.__wrapped__(key, actions) == _is_sane_key_plain(key, actions), key


# Text without lone surrogates (a path, a query or a token as the server decodes them:
# uvicorn's unquote replaces invalid UTF-8, so no surrogate ever reaches a line).
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


_ITEMS = st.tuples(
    # Whole milliseconds apart or not: a batch makes each millisecond's text once.
    st.one_of(st.integers(0, 4_102_444_800_000_000_000),
              st.integers(1_764_000_000_000_000_000, 1_764_000_000_003_000_000)),
    st.one_of(_TEXT, st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)),  # request id
    st.sampled_from(["GET", "HEAD", "PUT", "DELETE", "PATCH", "M-SEARCH"]) | _TEXT,  # method
    st.one_of(_TEXT, st.just('/v1/kv/a"b\\c\n\u2028\x7f')),  # path
    st.one_of(st.binary(max_size=40), st.just(b"ns=a&access%5Ftoken=s%0A")),  # query
    st.sampled_from(["/v1/kv/{key}", "unmatched", "/v1/events"]),  # route
    st.integers(100, 599),  # status
    # seconds: any, or a short duration (its JSON remembered by microsecond count), or a
    # negative one (none is, but a line must not depend on it)
    st.one_of(st.floats(0, 1e6), st.just(0.0000004), st.just(2.5),
              st.integers(0, 5000).map(lambda us: us / 1e6), st.floats(-1, 0)),
    st.integers(0, 2**40),  # bytes sent
    st.one_of(st.none(), _TEXT),  # token
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_ITEMS, min_size=1, max_size=6))
def test_access_lines_are_their_entries_as_orjson_encodes_them(
    items: list[tuple[object, ...]],
) -> None:
    """The JSON access lines of a batch (a template filled value by value, the time's
    text and a method's or route's JSON reused) are, byte for byte, what orjson makes
    of each line's entry: keys, their order, escapes and numbers."""
    log = AccessLog()
    plain = b"".join(orjson.dumps(log._entry(item), option=orjson.OPT_APPEND_NEWLINE)
                     for item in items)
    assert log._lines(items) == plain


def test_the_line_names_cache_stays_bounded_whatever_methods_clients_send() -> None:
    """A method is any token a client sends: the JSON remembered for methods and routes
    holds at most _NAMES_JSON_MAX names of at most _NAME_MAX_CHARS characters, and the
    lines are the same whether a name was remembered or not."""
    from app import observability

    log = AccessLog()
    items = [(1_764_000_000_000_000_000 + i, "id", f"M{i}" * (1 + i % 50), "/p", b"",
              "unmatched", 200, 0.001, 0, None) for i in range(1000)]
    plain = b"".join(orjson.dumps(log._entry(item), option=orjson.OPT_APPEND_NEWLINE)
                     for item in items)
    assert log._lines(items) == plain
    cache = observability._NAMES_JSON
    assert len(cache) <= observability._NAMES_JSON_MAX
    assert max(map(len, cache)) <= observability._NAME_MAX_CHARS


def test_the_duration_table_stays_its_size_whatever_durations_lines_carry() -> None:
    """Durations' JSON is remembered in a list of fixed length, by whole microseconds
    under its length: a long or negative duration is encoded and not stored."""
    from app import observability

    table = observability._DURATIONS_JSON
    size = len(table)
    log = AccessLog()
    items = [(1_764_000_000_000_000_000, "id", "GET", "/p", b"", "unmatched", 200,
              seconds, 0, None)
             for seconds in (-0.5, -1e-6, 0.0, 1e-6, (size - 1) / 1e6, size / 1e6, 3600.0)]
    plain = b"".join(orjson.dumps(log._entry(item), option=orjson.OPT_APPEND_NEWLINE)
                     for item in items)
    assert log._lines(items) == plain
    assert log._lines(items) == plain  # the second time from the table
    assert len(table) == size
    assert table[size - 1] == b"4.095" and table[1] == b"0.001"


def test_the_full_duration_table_holds_compact_bytes() -> None:
    """Each slot is a copy of orjson's result, not the result itself (which sits in a
    4 KiB allocation: a full table would take 16 MiB of every worker)."""
    import tracemalloc

    from app import observability

    table = observability._DURATIONS_JSON
    saved = table[:]
    table[:] = [None] * len(table)
    tracemalloc.start()
    try:
        for us in range(len(table)):
            observability._duration_json(us)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        table[:] = saved
    assert held < 64 * len(table), held  # ~48 bytes a slot; orjson's own would be 4,096
