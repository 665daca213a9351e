"""Redis dies mid-test (a redis-server of our own on a free port): recommendations keep succeeding, what the
replica has seen is served from its in-process L1 cache, stored-history reads degrade to popularity, writes
say 503, /readyz says 'degraded' (still 200: every replica shares that Redis); when Redis is back, so is the
shared cache, with no restart, and L1 has kept its entries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.app.conftest import assert_envelope, metric_value, serve
from tests.app.redis_process import RedisProcess, free_port

pytestmark = pytest.mark.anyio


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


async def test_requests_keep_succeeding_when_redis_dies(make_settings, own_redis: RedisProcess) -> None:
    settings = make_settings(redis_url=own_redis.url, redis_retry_after_s=0.2, redis_timeout_s=0.2)
    warm = {"history": [3, 4, 5], "k": 5}
    async with serve(settings) as client:
        await client.post("/v1/users/gina/events", json={"events": [{"item_id": 9, "timestamp": 1}]})
        assert (await client.post("/v1/recommend", json=warm)).status_code == 200
        assert (await client.post("/v1/recommend", json=warm)).json()["cache_hit"]

        own_redis.kill()
        bodies = []
        for n in range(12):
            response = await client.post("/v1/recommend", json={"history": [1 + n, 20 + n], "k": 5})
            assert response.status_code == 200, response.text
            bodies.append(response.json())
        again = (await client.post("/v1/recommend", json=warm)).json()
        seen_during = (await client.post("/v1/recommend", json={"history": [1, 20], "k": 5})).json()
        stored = (await client.post("/v1/recommend", json={"user_id": "gina"})).json()
        write = await client.post("/v1/users/gina/events", json={"events": [{"item_id": 9, "timestamp": 2}]})
        read = await client.get("/v1/users/gina/history")
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
        assert all(b["model"] == "llmsrec" and not b["degraded"] and not b["cache_hit"] for b in bodies)
        assert again["cache_hit"] and again["model"] == "llmsrec" and not again["degraded"]  # from L1
        assert seen_during["cache_hit"]  # computed during the outage, kept in L1
        assert stored["model"] == "popularity" and stored["degraded"]
        assert "stored history unavailable" in stored["degraded_reason"]
        assert_envelope(write, 503, "store_unavailable")
        assert_envelope(read, 503, "store_unavailable")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded"
        assert ready.json()["checks"]["store"].startswith("degraded: Redis unreachable for ")
        assert metric_value(metrics, "llmrec_store_errors_total", 'op="get_vector"') >= 1
        assert metric_value(metrics, "llmrec_cache_lookups_total", 'result="l1_hit"') == 3.0
        assert metric_value(metrics, "llmrec_cache_lookups_total", 'result="miss"') == 13.0

        own_redis.start()  # same port, empty: the cache fills again once the breaker lets calls through
        back_ready = await client.get("/readyz")  # its ping closes the breaker at once
        fresh = {"history": [40, 41, 42], "k": 5}
        await client.post("/v1/recommend", json=fresh)
        back = (await client.post("/v1/recommend", json=warm)).json()
        assert back["cache_hit"] and back_ready.status_code == 200 and back_ready.json()["status"] == "ready"
        assert back_ready.json()["checks"]["store"] == "ok"
    raw = redis.Redis.from_url(own_redis.url)
    try:
        assert len(raw.keys(f"{settings.redis.prefix}:uv:*")) == 1  # the fresh vector went to Redis again
    finally:
        raw.close()


async def test_without_l1_an_outage_turns_every_lookup_into_a_miss(make_settings, own_redis) -> None:
    """The comparison: l1_cache_max_entries=0 is Redis alone (the behaviour before the L1)."""
    settings = make_settings(redis_url=own_redis.url, redis_retry_after_s=0.2, l1_cache_max_entries=0)
    warm = {"history": [3, 4, 5], "k": 5}
    async with serve(settings) as client:
        await client.post("/v1/recommend", json=warm)
        before = (await client.post("/v1/recommend", json=warm)).json()
        own_redis.kill()
        during = (await client.post("/v1/recommend", json=warm)).json()
        metrics = (await client.get("/metrics")).text
    assert before["cache_hit"] and not during["cache_hit"] and during["model"] == "llmsrec"
    assert metric_value(metrics, "llmrec_cache_lookups_total", 'result="l2_hit"') == 1.0
    assert metric_value(metrics, "llmrec_cache_lookups_total", 'result="l1_hit"') == 0.0
