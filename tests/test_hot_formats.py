"""The hot path's formatters against the plain code they replace, output byte for byte."""

from __future__ import annotations

import random
import time

from app.syntax import iso_ms


def _iso_ms_plain(ms: int) -> str:
    sec, frac = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec)) + f".{frac:03d}Z"


def test_iso_ms_is_the_plain_format() -> None:
    rng = random.Random(15)
    now = time.time_ns() // 1_000_000
    cases = [0, 1, 999, 1000, 1001, -1, -999, -1000, now, 253_402_300_799_999]
    cases += [rng.randrange(0, 4_102_444_800_000) for _ in range(3000)]
    cases += [now + i for i in range(-50, 50)]
    for ms in cases * 2:  # the second time from the cache
        assert iso_ms(ms) == _iso_ms_plain(ms), ms
