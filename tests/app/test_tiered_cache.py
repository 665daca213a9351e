"""The two-level vector cache: an in-process LRU (L1) in front of Redis (L2). Write-through, an L2 hit is
copied into L1, L1 is bounded and expires, lookups are counted by level, another bundle version's key never
hits, and a Redis that dies (a redis-server of the test's own) leaves L1 serving; when it returns, the store
uses it again without a restart and L1 has kept its entries."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from app.cache import VECTOR, BytesLRU, content_key
from app.redis_store import RedisSettings, RedisStore
from app.tiered_cache import CacheSettings, TieredStore, create_store
from tests.app.conftest import REDIS_URL, CountingBackend, metric_value, serve
from tests.app.redis_process import RedisProcess, free_port

pytestmark = pytest.mark.anyio


def redis_store(url: str, prefix: str) -> RedisStore:
    redis_settings = RedisSettings(url, prefix=prefix, timeout_s=0.2, retry_after_s=0.2, max_connections=4)
    return RedisStore(redis_settings, ttl_s=60, history_ttl_s=0)


@pytest.fixture
async def lookups() -> list[str]:
    return []


@pytest.fixture
async def tiered(redis_run_prefix: str, lookups: list[str]) -> AsyncIterator[TieredStore]:
    store = TieredStore(redis_store(REDIS_URL, f"{redis_run_prefix}:l1"), BytesLRU(3, 60), lookups.append)
    yield store
    await store.close()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(free_port(), tmp_path)
    server.start()
    yield server
    server.kill()


async def test_write_through_then_l1_then_l2_hits_counted(tiered: TieredStore, lookups: list[str]) -> None:
    vector = np.arange(6, dtype=np.float32)
    assert await tiered.get("k1", VECTOR) is None
    await tiered.set("k1", vector, VECTOR)
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        assert np.frombuffer(raw.get("k1"), np.float32).tolist() == vector.tolist()  # written through
    finally:
        raw.delete("k1")
        raw.close()
    got = await tiered.get("k1", VECTOR)
    assert got is not None and got.tolist() == vector.tolist()
    got[0] = 99.0  # a caller's change does not reach the cached entry
    assert (await tiered.get("k1", VECTOR)).tolist() == vector.tolist()  # type: ignore[union-attr]
    assert lookups == ["miss", "l1_hit", "l1_hit"]


async def test_another_replica_fills_l1_from_l2(redis_run_prefix: str) -> None:
    """Replica A computes a vector; replica B finds it in Redis once (l2_hit), then in its own L1."""
    seen: list[str] = []
    a = TieredStore(redis_store(REDIS_URL, "a"), BytesLRU(10, 60))
    b = TieredStore(redis_store(REDIS_URL, "b"), BytesLRU(10, 60), seen.append)
    key = f"{redis_run_prefix}:uv:shared"
    try:
        await a.set(key, np.ones(4, np.float32), VECTOR)
        assert (await b.get(key, VECTOR)) is not None and (await b.get(key, VECTOR)) is not None
        assert seen == ["l2_hit", "l1_hit"] and b.l1 is not None and len(b.l1) == 1
    finally:
        await a.close()
        await b.close()


async def test_l1_is_bounded_and_expires(
    tiered: TieredStore, lookups: list[str], redis_run_prefix: str
) -> None:
    keys = [f"{redis_run_prefix}:uv:bound{i}" for i in range(5)]
    for i, key in enumerate(keys):
        await tiered.set(key, np.full(2, i, np.float32), VECTOR)
    assert tiered.l1 is not None and len(tiered.l1) == 3  # the 3 most recent; the oldest two were evicted
    lookups.clear()
    newest_first = [float((await tiered.get(k, VECTOR))[0]) for k in reversed(keys)]  # type: ignore[index]
    assert newest_first == [4, 3, 2, 1, 0]  # every value, from one level or the other
    assert lookups == ["l1_hit", "l1_hit", "l1_hit", "l2_hit", "l2_hit"]
    assert len(tiered.l1) == 3

    short = BytesLRU(10, ttl_s=0.05)
    short.put("x", b"entry")
    assert short.get("x") is not None
    await asyncio.sleep(0.08)
    assert short.get("x") is None and len(short) == 0


async def test_keys_of_another_bundle_version_never_hit(tiered: TieredStore, redis_run_prefix: str) -> None:
    ours = content_key(redis_run_prefix, "uv", "bundle-v1", ["t1", [1, 2, 3], None])
    theirs = content_key(redis_run_prefix, "uv", "bundle-v2", ["t1", [1, 2, 3], None])
    await tiered.set(ours, np.ones(4, np.float32), VECTOR)  # in L1 and in Redis
    assert await tiered.get(theirs, VECTOR) is None
    assert await tiered.get(ours, VECTOR) is not None


async def test_l1_serves_while_redis_is_down_and_keeps_its_entries_after(own_redis: RedisProcess) -> None:
    seen: list[str] = []
    store = create_store(
        RedisSettings(own_redis.url, prefix="outage", timeout_s=0.2, retry_after_s=0.1, max_connections=4),
        CacheSettings(
            cache_ttl_s=60,
            cache_max_entries=10,
            l1_cache_max_entries=100,
            l1_cache_ttl_s=600,
            history_ttl_s=0,
        ),
        on_lookup=seen.append,
    )
    try:
        await store.set("warm", np.full(3, 7.0, np.float32), VECTOR)
        assert await store.check() == "ok"

        own_redis.kill()
        got = await store.get("warm", VECTOR)
        assert got is not None and got.tolist() == [7.0, 7.0, 7.0]  # from L1: Redis is not asked
        assert await store.get("cold", VECTOR) is None
        await store.set("during", np.full(3, 8.0, np.float32), VECTOR)  # L1 only; no exception
        assert (await store.get("during", VECTOR)) is not None
        state = await store.check()
        assert state.startswith("degraded: Redis unreachable for ") and "(2 entries)" in state
        assert seen == ["l1_hit", "miss", "l1_hit"]

        own_redis.start()  # same port, empty
        assert await store.check() == "ok"  # the readiness probe closes the breaker at once
        await store.set("after", np.full(3, 9.0, np.float32), VECTOR)
        raw = redis.Redis.from_url(own_redis.url)
        try:
            assert raw.get("after") is not None  # Redis is written again, no restart of the store
        finally:
            raw.close()
        assert (await store.get("warm", VECTOR)) is not None and (
            await store.get("during", VECTOR)
        ) is not None
        assert seen[-2:] == ["l1_hit", "l1_hit"]  # L1 kept what it had
    finally:
        await store.close()


async def test_the_service_never_takes_another_bundle_versions_vector(make_settings, hf_backend) -> None:
    """A vector cached in Redis under another bundle version (same prompt digest) is a miss for a fresh
    replica of this version; the same entry under this version is an L2 hit."""
    settings = make_settings()
    body = {"history": [5, 6, 7, 8], "k": 5}
    async with serve(settings, backend=CountingBackend(hf_backend)) as client:
        await client.post("/v1/recommend", json=body)
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        (ours,) = raw.keys(f"{settings.redis.prefix}:uv:*")
        prefix, version, digest = ours.decode().rsplit(":", 2)
        raw.rename(ours, f"{prefix}:other-version:{digest}")  # what a replica of another bundle wrote
        counting = CountingBackend(hf_backend)
        async with serve(settings, backend=counting) as client:  # fresh replica: empty L1
            other = (await client.post("/v1/recommend", json=body)).json()
        raw.rename(f"{prefix}:other-version:{digest}", ours)  # the same entry under this version
        async with serve(settings, backend=counting) as client:
            same = (await client.post("/v1/recommend", json=body)).json()
            metrics = (await client.get("/metrics")).text
    finally:
        raw.close()
    assert version != "other-version" and not other["cache_hit"] and counting.calls == 1
    assert same["cache_hit"] and counting.calls == 1
    assert metric_value(metrics, "llmrec_cache_lookups_total", 'result="l2_hit"') == 1.0
