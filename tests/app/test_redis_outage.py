"""Redis dies mid-test (a redis-server of our own on a free port): recommendations keep succeeding without
the cache, stored-history reads degrade to popularity, writes say 503; when Redis is back, so is the cache."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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
        stored = (await client.post("/v1/recommend", json={"user_id": "gina"})).json()
        write = await client.post("/v1/users/gina/events", json={"events": [{"item_id": 9, "timestamp": 2}]})
        read = await client.get("/v1/users/gina/history")
        ready = await client.get("/readyz")
        metrics = (await client.get("/metrics")).text
        assert all(b["model"] == "llmsrec" and not b["degraded"] and not b["cache_hit"] for b in bodies)
        assert not again["cache_hit"] and again["model"] == "llmsrec"
        assert stored["model"] == "popularity" and stored["degraded"]
        assert "stored history unavailable" in stored["degraded_reason"]
        assert_envelope(write, 503, "store_unavailable")
        assert_envelope(read, 503, "store_unavailable")
        assert ready.status_code == 503 and ready.json()["checks"]["store"] == "unreachable"
        assert metric_value(metrics, "llmrec_store_errors_total", 'op="get_vector"') >= 1

        own_redis.start()  # same port, empty: the cache fills again once the breaker lets calls through
        time.sleep(0.3)
        await client.post("/v1/recommend", json=warm)
        back = (await client.post("/v1/recommend", json=warm)).json()
        assert back["cache_hit"] and (await client.get("/readyz")).status_code == 200
