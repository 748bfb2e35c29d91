"""The memory backend keeps a session variable's value in a buffer of its own length.

``orjson.dumps`` leaves its result in a 4 KiB allocation whatever its length (orjson
3.x; ``app.backends.memory.store.compact``), and a variable's value is made by it (on
register, on every write, on a snapshot's import): kept as it came, each variable held
~5.4 KB, most of it slack. Measured with tracemalloc over 300 variables.
"""

from __future__ import annotations

import gc
import tracemalloc

from app.main import create_app
from app.settings import Settings
from tests.locks_support import client_of

COUNT = 300
#: What a registered or written variable may hold, its share of the session and of the
#: change log's events included (~1.1-1.4 KB measured); the slack of one orjson result
#: alone is 4 KB.
MOST_PER_VARIABLE = 2_500


async def test_variables_written_and_registered_keep_no_orjson_slack() -> None:
    app = create_app(Settings(backend="memory://"))
    async with client_of(app) as c:
        warm = await c.post("/v1/sessions/s0/variables",
                            json={"name": "warm", "type": "integer", "value": 1})
        assert warm.status_code == 201, warm.text
        gc.collect()
        tracemalloc.start()
        try:
            for i in range(COUNT):
                r = await c.post(f"/v1/sessions/s{i % 5}/variables",
                                 json={"name": f"v{i}", "type": "integer", "value": i})
                assert r.status_code == 201, r.text
            gc.collect()
            registered = tracemalloc.get_traced_memory()[0] / COUNT
            tracemalloc.reset_peak()
            start = tracemalloc.get_traced_memory()[0]
            for i in range(COUNT):
                r = await c.put(f"/v1/sessions/s{i % 5}/variables/v{i}", json={"value": -i})
                assert r.status_code == 200, r.text
            gc.collect()
            written = (tracemalloc.get_traced_memory()[0] - start) / COUNT
        finally:
            tracemalloc.stop()
    assert registered < MOST_PER_VARIABLE, registered
    assert written < MOST_PER_VARIABLE, written
