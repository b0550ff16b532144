"""Prometheus metrics (``GET /metrics``), made from each request's record when it ends.

No stage imports this module: the stages write what they did on the request's
context, :class:`~shim.context.RequestContext` (model, characters, upstream attempts,
cache results, first byte, refusal) and :meth:`Metrics.observe` turns the finished
context into samples. The
health of Redis and of the disk cache is counted by those parts themselves (the breaker,
the store's write episodes) and copied here when the metrics are read
(:meth:`Metrics.watch`).

With several worker processes (``PROMETHEUS_MULTIPROC_DIR`` set before start-up, as
``prometheus_client`` requires), every process writes its samples to that directory
and ``/metrics`` answers the sum over processes; gauges add the live processes'
values (the health gauges take the lowest: one process without Redis shows). Without
it, each app keeps its own registry.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

from shim.cache.episode import Episode
from shim.cache.outage import Outage
from shim.context import RequestContext
from shim.prices import MICRO, Prices

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "multiprocess"]

#: Seconds, for time to first byte and total duration: from a cache hit (ms) to long
#: audio streamed for minutes.
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def _labels(metric: MetricWrapperBase, *values: str) -> Any:
    return metric.labels(*values)


class _Copied:
    """A counter that follows a count kept by the part that counts (the Redis breaker,
    the disk store), copied when the metrics are read."""

    def __init__(self, counter: Counter, count: Callable[[], int]) -> None:
        self.counter = counter
        self.count = count
        self.seen = 0

    def sync(self) -> None:
        now = self.count()
        if now > self.seen:
            self.counter.inc(now - self.seen)
            self.seen = now


def multiprocess() -> bool:
    """Whether ``prometheus_client`` runs in multiprocess mode in this process."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


class Metrics:
    """The shim's metrics, all named ``tts_shim_*``, in a registry of their own."""

    def __init__(self, prices: Prices) -> None:
        self.prices = prices
        # A metric's child per label values, looked up once: prometheus_client checks the
        # values and takes a lock on every labels() call (~8 a request).
        self._child = functools.lru_cache(maxsize=None)(_labels)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tts_shim_requests",
            "Requests answered, by route template, model and status.",
            ["route", "model", "status"],
            registry=r,
        )
        self.duration = Histogram(
            "tts_shim_request_duration_seconds",
            "Time from request to the end of the response.",
            ["route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.first_byte = Histogram(
            "tts_shim_time_to_first_byte_seconds",
            "Time from request to the first body byte sent.",
            ["route"],
            buckets=_BUCKETS,
            registry=r,
        )
        self.upstream_calls = Counter(
            "tts_shim_upstream_calls",
            "Calls to the AI/ML API (generation) and its CDN (download), by outcome "
            "(ok, or the error code).",
            ["kind", "outcome"],
            registry=r,
        )
        self.retries = Counter(
            "tts_shim_upstream_retries",
            "Upstream attempts after the first of a request, by kind.",
            ["kind"],
            registry=r,
        )
        self.characters = Counter(
            "tts_shim_characters",
            "Characters generated upstream (billed), by model and client key name.",
            ["model", "key"],
            registry=r,
        )
        self.usd = Counter(
            "tts_shim_usd",
            "Estimated spend in US dollars (price table times characters generated).",
            ["model", "key"],
            registry=r,
        )
        self.cache_hits = Counter(
            "tts_shim_cache_hits", "Audio served from the cache.", ["model"], registry=r
        )
        self.cache_misses = Counter(
            "tts_shim_cache_misses", "Cache look-ups that generated.", ["model"], registry=r
        )
        self.saved = Counter(
            "tts_shim_cache_saved_usd",
            "Estimated US dollars not spent thanks to cache hits.",
            ["model", "key"],
            registry=r,
        )
        self.refused = Counter(
            "tts_shim_limited_requests",
            "Requests refused by a key's limits, by code (rate_limit_exceeded, "
            "insufficient_quota).",
            ["key", "code"],
            registry=r,
        )
        self.bytes = Counter(
            "tts_shim_bytes_streamed",
            "Response body bytes sent, by route template.",
            ["route"],
            registry=r,
        )
        self.slots = Gauge(
            "tts_shim_slots_in_use",
            "Speech slots held (upstream call or audio stream in progress).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.queue = Gauge(
            "tts_shim_queue_length",
            "Requests waiting for a speech slot.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._counts: list[_Copied] = []
        self._states: list[tuple[Gauge, Callable[[], bool]]] = []

    def watch(self, redis: Outage | None = None, disk: Episode | None = None) -> None:
        """Add the health of Redis (``redis``, its breaker) and of the disk cache's
        writes (``disk``): only the parts the shim runs with get metrics. Call once."""
        r = self.registry
        if redis is not None:
            outages = Counter(
                "tts_shim_redis_outages",
                "Times Redis stopped answering and the shim went on without it.",
                registry=r,
            )
            skipped = Counter(
                "tts_shim_redis_skipped_calls",
                "Redis calls not made because it was down (each would have waited).",
                registry=r,
            )
            up = Gauge(
                "tts_shim_redis_up",
                "1 while Redis answers; 0 while the shim serves without it.",
                registry=r,
                multiprocess_mode="livemin",
            )
            self._counts += [
                _Copied(outages, lambda: redis.outages),
                _Copied(skipped, lambda: redis.skipped),
            ]
            self._states.append((up, lambda: not redis.down))
        if disk is not None:
            failures = Counter(
                "tts_shim_cache_write_failures",
                "Writes the disk cache could not make (disk full, read-only...).",
                registry=r,
            )
            writable = Gauge(
                "tts_shim_cache_writable",
                "1 while the disk cache can write; 0 from a failed write to the next "
                "one that succeeds (it still serves what it holds).",
                registry=r,
                multiprocess_mode="livemin",
            )
            self._counts.append(_Copied(failures, lambda: disk.failures))
            self._states.append((writable, lambda: not disk.failing))
        self._health()

    def _health(self) -> None:
        for count in self._counts:
            count.sync()
        for gauge, state in self._states:
            gauge.set(1 if state() else 0)

    def observe(self, context: RequestContext, route: str) -> None:
        """Add one finished request (its context) to the metrics."""
        status = str(context.status or 500)
        model = context.model or ""
        key = context.client.name
        refused = context.refusal
        self._child(self.requests, route, model, status).inc()
        now = time.perf_counter()
        self._child(self.duration, route).observe(now - context.started)
        if context.first_byte is not None:
            self._child(self.first_byte, route).observe(context.first_byte - context.started)
        if context.bytes:
            self._child(self.bytes, route).inc(context.bytes)
        attempts: dict[str, int] = {}
        for kind, outcome in context.upstream_calls:
            self._child(self.upstream_calls, kind, outcome).inc()
            attempts[kind] = attempts.get(kind, 0) + 1
        for kind, count in attempts.items():
            if count > 1:
                self._child(self.retries, kind).inc(count - 1)
        if context.cache_hits:
            self._child(self.cache_hits, model).inc(context.cache_hits)
            saved = self.prices.micros(model, context.cache_hit_characters)
            self._child(self.saved, model, key).inc(saved / MICRO)
        if context.cache_misses:
            self._child(self.cache_misses, model).inc(context.cache_misses)
        if refused is not None:
            self._child(self.refused, key, refused).inc()

    def billed(self, model: str, key: str, characters: int, micros: int) -> None:
        """Add one generation the AI/ML API billed (or may have), when its answer came:
        counted by the request's :class:`~shim.quota.Bill`, as the usage is."""
        self._child(self.characters, model, key).inc(characters)
        self._child(self.usd, model, key).inc(micros / MICRO)

    def load(self, in_flight: int, queued: int) -> None:
        """Set the slot gauges, and copy the watched parts' health (at each request's
        end and at each scrape)."""
        self.slots.set(in_flight)
        self.queue.set(queued)
        self._health()

    def exposition(self) -> bytes:
        """The text exposition format: this app's registry, or every process's samples
        in multiprocess mode."""
        if multiprocess():
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
