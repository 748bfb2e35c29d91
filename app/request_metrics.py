"""The service's Prometheus metrics, in a registry owned by one app.

Request metrics cost one update per request: ``RequestStats.record`` adds to plain
integers and floats kept per (route, method, status), and a collector of its own turns
them into ``corkboard_http_requests_total``, ``corkboard_http_request_duration_seconds``
and ``corkboard_http_requests_in_flight`` when /metrics is scraped. prometheus_client's
labelled children take a lock and validate on every call (five calls, ~4 us a request).
The event loop is the only writer; a scrape (in a worker thread) copies each cell in one
C call, so it sees every cell whole.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

#: Methods counted by name; any other (a client may send any token) counts as "OTHER",
#: so that hostile requests cannot grow the metric cells without bound.
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)


class RequestStats(Collector):
    """Requests by route, method and status; latency by route and method; in flight."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        #: (route, method, status) -> [count, seconds, per-bucket counts..., +Inf count]
        self._cells: dict[tuple[str, str, int], list[float]] = {}
        self.started = 0

    def record(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request: the one metric update of a request."""
        if method not in METHODS:
            method = "OTHER"
        cell = self._cells.get((route, method, status))
        if cell is None:
            cell = self._cells[(route, method, status)] = [0] * (len(self.buckets) + 3)
        cell[0] += 1
        cell[1] += seconds
        cell[2 + bisect_left(self.buckets, seconds)] += 1

    def collect(self) -> Iterator[Metric]:
        cells = [(key, list(cell)) for key, cell in list(self._cells.items())]
        requests = CounterMetricFamily(
            "corkboard_http_requests", "HTTP requests by route, method and status",
            labels=["route", "method", "status"],
        )
        latency: dict[tuple[str, str], list[float]] = {}
        finished = 0
        for (route, method, status), cell in cells:
            requests.add_metric([route, method, str(status)], cell[0])
            finished += int(cell[0])
            total = latency.setdefault((route, method), [0.0] * len(cell))
            for i, value in enumerate(cell):
                total[i] += value
        yield requests
        histogram = HistogramMetricFamily(
            "corkboard_http_request_duration_seconds", "HTTP request latency by route",
            labels=["route", "method"],
        )
        bounds = [*(str(float(b)) for b in self.buckets), "+Inf"]
        for (route, method), total in latency.items():
            running, buckets = 0.0, []
            for bound, count in zip(bounds, total[2:], strict=True):
                running += count
                buckets.append((bound, running))
            histogram.add_metric([route, method], buckets, total[1])
        yield histogram
        in_flight = GaugeMetricFamily(
            "corkboard_http_requests_in_flight", "Requests being served"
        )
        in_flight.add_metric([], max(0, self.started - finished))
        yield in_flight


class PlainCounter(Collector):
    """A counter kept as a plain integer: ``inc`` is one addition, no lock. For counts
    the event loop bumps per delivery (prometheus_client's ``Counter`` takes a lock on
    every update). Exposed as ``<name>_total`` when /metrics is scraped."""

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


class Metrics:
    """The service's Prometheus metrics, in a registry owned by one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = RequestStats()
        r.register(self.requests)
        self.watchers = Gauge("corkboard_watchers_open", "Open watch streams", registry=r)
        self.events_published = PlainCounter(
            "corkboard_events_published", "Change events read from the log for watchers"
        )
        r.register(self.events_published)
        self.events_delivered = PlainCounter(
            "corkboard_events_delivered", "Events handed to watchers"
        )
        r.register(self.events_delivered)
        self.watch_overflows = Counter(
            "corkboard_watch_overflows", "Watch streams closed because they fell too far behind",
            registry=r,
        )
        self.watch_resets = Counter(
            "corkboard_watch_resets", "Reset events sent (resume point no longer retained)",
            registry=r,
        )
        self.lock_waits = Histogram(
            "corkboard_lock_wait_seconds", "Time acquirers waited for a lock",
            ["outcome"], buckets=(0.001, 0.01, 0.1, 0.5, 1, 5, 15, 60), registry=r,
        )
        self.backend_errors = Counter(
            "corkboard_backend_errors", "Backend calls that failed (answered 503)", registry=r
        )

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.record(route, method, status, seconds)
