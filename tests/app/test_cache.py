"""The two stores behave alike (Redis on the real server, the in-process LRU); keys depend on exactly
what the prompt shows and are hash-tagged by user; a dead Redis is a cache miss, counted, not an error."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np
import pytest
import redis

from app.cache import VECTOR, MemoryStore, content_key, history_key
from app.domain import Event
from app.errors import StoreUnavailableError
from app.redis_store import RedisSettings, RedisStore
from tests.app.conftest import REDIS_URL

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["redis", "memory"])
async def store(
    request: pytest.FixtureRequest, redis_run_prefix: str
) -> AsyncIterator[RedisStore | MemoryStore]:
    if request.param == "memory":
        yield MemoryStore(max_entries=100, ttl_s=60)
        return
    redis_settings = RedisSettings(
        REDIS_URL, prefix=f"{redis_run_prefix}:cache", timeout_s=1, max_connections=4
    )
    made = RedisStore(redis_settings, ttl_s=60, history_ttl_s=600)
    yield made
    await made.close()


async def test_vectors_round_trip(store) -> None:
    vector = np.arange(8, dtype=np.float32) / 3
    key = f"k-{id(store)}"
    assert await store.get(key, VECTOR) is None
    await store.set(key, vector, VECTOR)
    np.testing.assert_array_equal(await store.get(key, VECTOR), vector)


async def test_histories_are_idempotent_ordered_and_capped(store) -> None:
    user = f"u{id(store)}"
    events = [Event(5, 50), Event(1, 10), Event(2, 20.25), Event(1, 10)]
    assert await store.append_events(user, events, cap=10) == (3, 3)
    assert await store.append_events(user, [Event(2, 20.25), Event(9, 90)], cap=3) == (1, 3)
    assert await store.get_history(user) == [Event(2, 20.25), Event(5, 50.0), Event(9, 90.0)]


def test_keys() -> None:
    base = content_key("p", "uv", "v1", ["t1", [1, 2], None])
    assert base.startswith("p:uv:v1:") and base == content_key("p", "uv", "v1", ["t1", [1, 2], None])
    assert (
        len(
            {
                base,
                content_key("p", "uv", "v2", ["t1", [1, 2], None]),
                content_key("p", "cs", "v1", ["t1", [1, 2], None]),
                content_key("p", "uv", "v1", ["t1", [2, 1], None]),
                content_key("p", "uv", "v1", ["t1", [1, 2], ["2020-01-01", "2020-01-02"]]),
                content_key("p", "uv", "v1", ["t2", [1, 2], None]),
            }
        )
        == 6
    )
    assert history_key("p", "alice") == "p:hist:{user:alice}"  # one Redis Cluster slot per user


async def test_memory_store_ttl_and_lru() -> None:
    store = MemoryStore(max_entries=2, ttl_s=0.05)
    for key in "abc":
        await store.set(key, np.ones(2, np.float32), VECTOR)
    assert (
        await store.get("a", VECTOR) is None and await store.get("c", VECTOR) is not None
    )  # LRU evicted "a"
    await asyncio.sleep(0.06)
    assert await store.get("c", VECTOR) is None  # expired


async def test_a_dead_redis_is_a_counted_miss_and_the_breaker_skips_it() -> None:
    errors: list[str] = []
    dead = RedisSettings(
        "redis://127.0.0.1:1/0", prefix="p", timeout_s=0.2, retry_after_s=30, max_connections=2
    )
    store = RedisStore(dead, ttl_s=60, history_ttl_s=0, on_error=errors.append)
    try:
        assert await store.get("k", VECTOR) is None
        await store.set("k", np.ones(2, np.float32), VECTOR)  # no exception
        with pytest.raises(StoreUnavailableError, match="Redis is unavailable"):
            await store.get_history("u")
        assert errors == ["get_vector"]  # the breaker is open: later calls do not touch the network
        assert not await store.ping()
    finally:
        await store.close()


async def test_a_corrupt_cache_entry_is_a_miss(redis_run_prefix: str) -> None:
    store = RedisStore(
        RedisSettings(REDIS_URL, prefix=redis_run_prefix, timeout_s=1, max_connections=2),
        ttl_s=60,
        history_ttl_s=0,
    )
    raw = redis.Redis.from_url(REDIS_URL)
    try:
        raw.set(f"{redis_run_prefix}:uv:corrupt", b"abc", ex=60)
        assert await store.get(f"{redis_run_prefix}:uv:corrupt", VECTOR) is None
    finally:
        raw.close()
        await store.close()
