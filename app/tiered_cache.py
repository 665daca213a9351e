"""The store the service builds: Redis (L2) behind a bounded in-process LRU (L1) for vectors, or the
in-process MemoryStore alone. Composes app.cache's parts; knows nothing of models or HTTP."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.cache import CacheResult, ErrorHook, LookupHook, MemoryStore, RedisStore, Store, VectorLRU
from app.domain import Event


class TieredStore:
    """L1, a bounded in-process LRU (VectorLRU), in front of L2, Redis, for vectors: a read tries L1, then
    Redis (an L2 hit is copied into L1); a write goes to both. Keys carry the bundle version and a digest of
    the prompt, so a value never changes under its key: an L1 entry can be evicted or expire, never be stale,
    and the replica keeps serving what it has seen while Redis is away. Histories stay in Redis alone (an
    L1 copy would make replicas disagree). l1=None: Redis only."""

    def __init__(self, l2: RedisStore, l1: VectorLRU | None, on_lookup: LookupHook | None = None) -> None:
        self.l1, self.l2, self._on_lookup = l1, l2, on_lookup

    def _count(self, result: CacheResult) -> None:
        if self._on_lookup is not None:
            self._on_lookup(result)

    async def get_vector(self, key: str) -> np.ndarray | None:
        vector = self.l1.get(key) if self.l1 is not None else None
        if vector is not None:
            self._count("l1_hit")
            return vector
        vector = await self.l2.get_vector(key)
        if vector is not None and self.l1 is not None:
            self.l1.put(key, vector)
        self._count("miss" if vector is None else "l2_hit")
        return vector

    async def set_vector(self, key: str, vector: np.ndarray) -> None:
        if self.l1 is not None:
            self.l1.put(key, vector)
        await self.l2.set_vector(key, vector)

    async def get_history(self, user_id: str) -> list[Event]:
        return await self.l2.get_history(user_id)

    async def append_events(self, user_id: str, events: Sequence[Event], cap: int) -> tuple[int, int]:
        return await self.l2.append_events(user_id, events, cap)

    async def ping(self) -> bool:
        return await self.l2.ping()

    async def check(self) -> str:
        state = await self.l2.check()
        if state == "ok" or self.l1 is None:
            return state
        return f"{state}; serving vectors from the in-process cache ({len(self.l1)} entries)"

    async def close(self) -> None:
        await self.l2.close()
        if self.l1 is not None:
            self.l1.clear()


def create_store(
    redis_url: str | None,
    prefix: str,
    *,
    timeout_s: float,
    retry_after_s: float,
    max_connections: int,
    ttl_s: int,
    history_ttl_s: int,
    max_entries: int,
    l1_max_entries: int = 0,
    l1_ttl_s: float = 0.0,
    cluster: bool = False,
    on_error: ErrorHook | None = None,
    on_lookup: LookupHook | None = None,
) -> Store:
    """Redis behind an in-process L1 of l1_max_entries vectors (0 = none) when a URL is given, else the
    in-process MemoryStore of max_entries."""
    if redis_url is None:
        return MemoryStore(max_entries, ttl_s, on_lookup)
    redis = RedisStore(
        redis_url,
        prefix,
        timeout_s=timeout_s,
        retry_after_s=retry_after_s,
        max_connections=max_connections,
        ttl_s=ttl_s,
        history_ttl_s=history_ttl_s,
        cluster=cluster,
        on_error=on_error,
    )
    l1 = VectorLRU(l1_max_entries, l1_ttl_s) if l1_max_entries > 0 else None
    return TieredStore(redis, l1, on_lookup)
