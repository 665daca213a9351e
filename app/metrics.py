"""Prometheus metrics of one app instance (its own registry, so several apps can live in one process):
requests and latency per route, cache lookups by level (L1 in process, L2 Redis) and hit ratio, store errors,
LLM batch sizes and time, fallbacks (load shedding included: reason *llm_shed)."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "llmrec_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "llmrec_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.cache = Counter(
            "llmrec_cache_lookups_total",
            "Cache lookups (user vectors, candidate scores, genre answers) by result: l1_hit (in-process "
            "LRU), l2_hit (Redis), miss.",
            ["result"],
            registry=r,
        )
        self.cache_hit_ratio = Gauge(
            "llmrec_cache_hit_ratio", "Cache hits over lookups since start.", registry=r
        )
        self.cache_hit_ratio.set_function(self._hit_ratio)
        self.store_errors = Counter(
            "llmrec_store_errors_total",
            "Redis calls that failed (served without the cache).",
            ["op"],
            registry=r,
        )
        self.batch_size = Histogram(
            "llmrec_llm_batch_size",
            "Prompts per LLM forward (micro-batching).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.llm_seconds = Histogram(
            "llmrec_llm_forward_seconds",
            "Wall time of one batched LLM forward.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.fallbacks = Counter(
            "llmrec_fallbacks_total", "Requests answered by a fallback, by reason.", ["reason"], registry=r
        )
        self.recommendations = Counter(
            "llmrec_recommendations_total",
            "Recommendations by the model that ranked them.",
            ["model"],
            registry=r,
        )
        self._hits = 0
        self._lookups = 0

    def _hit_ratio(self) -> float:
        return self._hits / self._lookups if self._lookups else 0.0

    def cache_lookup(self, result: str) -> None:
        """result: 'l1_hit', 'l2_hit' or 'miss' (app.cache.CacheResult)."""
        self._lookups += 1
        self._hits += result != "miss"
        self.cache.labels(result).inc()

    def store_error(self, op: str) -> None:
        self.store_errors.labels(op).inc()

    def llm_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.llm_seconds.observe(seconds)

    def http(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def elapsed_ms(start: float) -> float:
    """Milliseconds since `start` (a time.perf_counter() reading), rounded to microseconds."""
    return round((time.perf_counter() - start) * 1000.0, 3)
