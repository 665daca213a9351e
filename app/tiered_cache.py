"""The store the service builds: Redis (L2) behind a bounded in-process LRU (L1) for cached values, or the
in-process MemoryStore alone. CacheSettings says how much each level keeps and for how long. Composes
app.cache and app.redis_store; knows nothing of models or HTTP."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar, TypeVar

from annotated_types import Ge, Gt, Le

from app.cache import BytesLRU, CacheResult, Codec, ErrorHook, LookupHook, MemoryStore, Store
from app.domain import Event
from app.redis_store import RedisSettings, RedisStore

T = TypeVar("T")
DAY_S = 86_400


@dataclass(frozen=True)
class CacheSettings:
    """What the store keeps and for how long: env LLMREC_<FIELD> (e.g. LLMREC_CACHE_TTL_S); the bounds are
    checked when app.settings reads them."""

    # how app.settings (pydantic) validates this group: no unknown field, the docstrings as descriptions
    __pydantic_config__: ClassVar[dict[str, object]] = {"extra": "forbid", "use_attribute_docstrings": True}

    cache_ttl_s: Annotated[int, Ge(1), Le(30 * DAY_S)] = DAY_S
    """TTL of a cached LLM answer (user vector, candidate scores, genre answer)."""
    cache_max_entries: Annotated[int, Ge(1), Le(10_000_000)] = 100_000
    """Capacity of the in-process LRU (used when redis_url is None)."""
    l1_cache_max_entries: Annotated[int, Ge(0), Le(10_000_000)] = 20_000
    """With Redis: cached answers (user vectors, candidate scores, genre answers) each replica keeps in an
    in-process LRU in front of Redis, so hot keys skip the network and a Redis outage keeps what the replica
    has seen; 0 = none. An entry is 4 bytes per float of a vector, a genre answer its JSON."""
    l1_cache_ttl_s: Annotated[float, Gt(0), Le(30 * DAY_S)] = 3_600
    """TTL of an in-process (L1) cache entry. Keys carry the bundle version and the prompt, so an entry is
    never stale; the TTL only bounds how long an unused one survives a Redis outage."""
    history_ttl_s: Annotated[int, Ge(0), Le(3650 * DAY_S)] = 180 * DAY_S
    """TTL of a stored user history; 0 = never expires."""


class TieredStore:
    """L1, a bounded in-process LRU (BytesLRU), in front of L2, Redis, for cached values: a read tries L1,
    then Redis (an L2 hit is copied into L1); a write goes to both. Keys carry the bundle version and a digest
    of the prompt, so a value never changes under its key: an L1 entry can be evicted or expire, never be
    stale, and the replica keeps serving what it has seen while Redis is away. Histories stay in Redis alone
    (an L1 copy would make replicas disagree). l1=None: Redis only."""

    def __init__(self, l2: RedisStore, l1: BytesLRU | None, on_lookup: LookupHook | None = None) -> None:
        self.l1, self.l2, self._on_lookup = l1, l2, on_lookup

    def _count(self, result: CacheResult) -> None:
        if self._on_lookup is not None:
            self._on_lookup(result)

    async def get(self, key: str, codec: Codec[T]) -> T | None:
        raw = self.l1.get(key) if self.l1 is not None else None
        value = None if raw is None else codec.decode(raw)
        if value is not None:
            self._count("l1_hit")
            return value
        raw = await self.l2.read(key, codec.name)
        value = None if raw is None else codec.decode(raw)
        if value is not None and raw is not None and self.l1 is not None:
            self.l1.put(key, raw)
        self._count("miss" if value is None else "l2_hit")
        return value

    async def set(self, key: str, value: T, codec: Codec[T]) -> None:
        raw = codec.encode(value)
        if self.l1 is not None:
            self.l1.put(key, raw)
        await self.l2.write(key, raw, codec.name)

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
    redis: RedisSettings,
    cache: CacheSettings,
    on_error: ErrorHook | None = None,
    on_lookup: LookupHook | None = None,
) -> Store:
    """Redis behind an in-process L1 of cache.l1_cache_max_entries (0 = none) when redis.url is set, else the
    in-process MemoryStore of cache.cache_max_entries."""
    if redis.url is None:
        return MemoryStore(cache.cache_max_entries, cache.cache_ttl_s, on_lookup)
    l2 = RedisStore(redis, ttl_s=cache.cache_ttl_s, history_ttl_s=cache.history_ttl_s, on_error=on_error)
    l1 = BytesLRU(cache.l1_cache_max_entries, cache.l1_cache_ttl_s) if cache.l1_cache_max_entries else None
    return TieredStore(l2, l1, on_lookup)
