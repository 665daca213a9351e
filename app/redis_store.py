"""Redis as the store (asyncio, pooled, short timeouts, a circuit breaker): cached values as bytes with a
TTL, histories as sorted sets. RedisSettings is where Redis is and how to talk to it, read from the
environment by app.settings. A failed cache read or write is logged, counted and served as a miss; a failed
history call raises StoreUnavailableError. Knows nothing of models or HTTP."""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeVar

from annotated_types import Ge, Gt, Le, Predicate
from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from app.cache import Codec, ErrorHook, event_member, history_key
from app.domain import Event
from app.errors import StoreUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")
KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


def is_key_prefix(prefix: str) -> bool:
    """1-64 characters of [A-Za-z0-9_.:-]."""
    return KEY_PREFIX.fullmatch(prefix) is not None


@dataclass(frozen=True)
class RedisSettings:
    """Where Redis is and how the store talks to it: env LLMREC_REDIS_<FIELD> (e.g. LLMREC_REDIS_URL); the
    bounds are checked when app.settings reads them."""

    # how app.settings (pydantic) validates this group: no unknown field, the docstrings as descriptions
    __pydantic_config__: ClassVar[dict[str, object]] = {"extra": "forbid", "use_attribute_docstrings": True}

    url: str | None = None
    """redis:// URL for cached LLM answers and histories; None → in-process LRU (one replica only)."""
    cluster: bool = False
    """`url` names a node of a Redis Cluster (history keys are hash-tagged by user; see app.cache)."""
    prefix: Annotated[str, Predicate(is_key_prefix)] = "llmrec"
    """Prefix of every Redis key ([A-Za-z0-9_.:-]{1,64}), so several deployments (or test runs) share one
    Redis."""
    timeout_s: Annotated[float, Gt(0), Le(10)] = 0.25
    """Connect and socket timeout of each Redis call; keeps Redis off the p99."""
    retry_after_s: Annotated[float, Ge(0), Le(60)] = 1.0
    """After a Redis error, skip Redis for this long (a simple circuit breaker)."""
    max_connections: Annotated[int, Ge(1), Le(10_000)] = 64
    """Size of the Redis connection pool."""


def _parse_member(raw: bytes | str) -> Event | None:
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        item, ts = text.split(":", 1)
        return Event(int(item), float(ts))
    except ValueError:
        log.warning("skipping malformed history entry %r", text)
        return None


class RedisStore:
    """Cached values as bytes with TTL; histories as sorted sets (score = timestamp, member =
    'item:timestamp'), trimmed to the newest `cap` events. cluster=True talks to a Redis Cluster (the URL
    names any node; the client discovers the rest and follows MOVED/ASK redirects).
    Circuit breaker: after a failure Redis is skipped for retry_after_s; then one call probes it while the
    others keep skipping (no herd of timeouts on a Redis that hangs). A ping (readiness) probes too."""

    def __init__(
        self, redis: RedisSettings, *, ttl_s: int, history_ttl_s: int, on_error: ErrorHook | None = None
    ) -> None:
        if redis.url is None:
            raise ValueError("RedisStore needs a Redis URL (without one, use app.cache.MemoryStore)")
        self.prefix, self.ttl_s, self.history_ttl_s = redis.prefix, ttl_s, history_ttl_s
        self.retry_after_s, self._on_error = redis.retry_after_s, on_error
        self._down_until = 0.0
        self._down_since: float | None = None  # monotonic time of the first failure of this outage
        self._probing = False
        client_class: Any = RedisCluster if redis.cluster else aioredis.Redis
        self.client: Any = client_class.from_url(
            redis.url,
            socket_timeout=redis.timeout_s,
            socket_connect_timeout=redis.timeout_s,
            # One immediate retry on a broken connection (e.g. after a Redis restart), none on a timeout: a
            # retry with backoff would hold the request; the breaker skips a Redis that is down.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            max_connections=redis.max_connections,
        )

    def outage_s(self) -> float | None:
        """Seconds since the first failed call of the current outage; None while Redis answers."""
        return None if self._down_since is None else time.monotonic() - self._down_since

    async def _call(self, op: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run one Redis call; on failure log, count, open the breaker and raise StoreUnavailableError."""
        probe = self._down_since is not None  # the first call after a failure probes for the others
        if time.monotonic() < self._down_until or (probe and self._probing):
            raise StoreUnavailableError(f"Redis is unavailable (retrying every {self.retry_after_s:g} s)")
        self._probing = self._probing or probe
        try:
            result = await make()
        except (RedisError, OSError) as err:
            self._mark_down()
            if self._on_error is not None:
                self._on_error(op)
            log.warning("redis %s failed: %r", op, err)
            raise StoreUnavailableError(f"Redis is unavailable: {type(err).__name__}") from err
        finally:
            if probe:
                self._probing = False
        self._mark_up()
        return result

    def _mark_down(self) -> None:
        self._down_until = time.monotonic() + self.retry_after_s
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error("Redis is unreachable: skipping it, one probe every %g s", self.retry_after_s)

    def _mark_up(self) -> None:
        if self._down_since is not None:
            log.warning("Redis answers again after %.1f s", time.monotonic() - self._down_since)
        self._down_since, self._down_until = None, 0.0

    async def read(self, key: str, what: str) -> bytes | None:
        """The bytes under `key`; None when absent or Redis is unavailable (op get_<what>)."""
        try:
            raw = await self._call(f"get_{what}", lambda: self.client.get(key))
        except StoreUnavailableError:
            return None
        return None if raw is None else bytes(raw)

    async def write(self, key: str, raw: bytes, what: str) -> None:
        """Store `raw` under `key` with the cache TTL; a lost write costs a recompute, nothing more."""
        with contextlib.suppress(StoreUnavailableError):
            await self._call(f"set_{what}", lambda: self.client.set(key, raw, ex=self.ttl_s))

    async def get(self, key: str, codec: Codec[T]) -> T | None:
        raw = await self.read(key, codec.name)
        return None if raw is None else codec.decode(raw)

    async def set(self, key: str, value: T, codec: Codec[T]) -> None:
        await self.write(key, codec.encode(value), codec.name)

    async def get_history(self, user_id: str) -> list[Event]:
        key = history_key(self.prefix, user_id)
        members = await self._call("get_history", lambda: self.client.zrange(key, 0, -1))
        return [e for e in (_parse_member(m) for m in members) if e is not None]

    async def append_events(self, user_id: str, events: Sequence[Event], cap: int) -> tuple[int, int]:
        key = history_key(self.prefix, user_id)
        mapping = {event_member(e): float(e.timestamp or 0.0) for e in events}

        async def append() -> list[Any]:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.zadd(key, mapping)
                pipe.zremrangebyrank(key, 0, -(cap + 1))  # keep the newest `cap`
                pipe.zcard(key)
                if self.history_ttl_s:
                    pipe.expire(key, self.history_ttl_s)
                return list(await pipe.execute())

        added, _, length, *_ = await self._call("append_events", append)
        return int(added), int(length)

    async def ping(self) -> bool:
        """Always asks Redis (the breaker's state aside) and updates the breaker with the answer."""
        try:
            answered = bool(await self.client.ping())
        except (RedisError, OSError):
            answered = False
        if answered:
            self._mark_up()
        else:
            self._mark_down()
        return answered

    async def check(self) -> str:
        if await self.ping():
            return "ok"
        return f"degraded: Redis unreachable for {self.outage_s() or 0.0:.1f} s; stored histories unavailable"

    async def close(self) -> None:
        await self.client.aclose()
