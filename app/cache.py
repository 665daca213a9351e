"""The parts of the user-vector cache and stored histories: Redis (asyncio, pooled, short timeouts, a circuit
breaker) and a bounded in-process LRU; app.tiered_cache composes them. A vector-cache failure never fails a
request: it is logged, counted and served as a miss. Knows nothing of models or HTTP."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
from redis import asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from app.domain import Event
from app.errors import StoreUnavailableError

log = logging.getLogger(__name__)
T = TypeVar("T")
ErrorHook = Callable[[str], None]  # called with the failed operation's name
CacheResult = Literal["l1_hit", "l2_hit", "miss"]
LookupHook = Callable[[CacheResult], None]  # called once per vector lookup


def vector_key(
    prefix: str, bundle_version: str, items: Sequence[int], dates: Sequence[str] | None, template_version: str
) -> str:
    """Key of a user vector: bundle version + sha256 of exactly what the prompt shows (template, the items
    whose titles and CF rows it holds, their dates). Content-addressed, not per user: users (and anonymous
    requests) with the same recent history share one entry, and only single-key GET/SET touch it, so it
    needs no hash tag; its slot follows the digest, which spreads vectors over every Redis Cluster node."""
    shown = json.dumps([template_version, [int(i) for i in items], None if dates is None else list(dates)])
    return f"{prefix}:uv:{bundle_version}:{hashlib.sha256(shown.encode()).hexdigest()}"


def history_key(prefix: str, user_id: str) -> str:
    """Hash-tagged by user ({user:ID}) so every key of one user lands in one Redis Cluster slot and the
    MULTI of append_events never crosses slots. User ids cannot hold braces (app.schemas.USER_ID_PATTERN)."""
    return f"{prefix}:hist:{{user:{user_id}}}"


def _member(event: Event) -> str:
    """'item:timestamp', the identity of an event (appends are idempotent on it)."""
    ts = float(event.timestamp or 0.0)
    return f"{event.item_id}:{int(ts) if ts.is_integer() else repr(ts)}"


def _parse_member(raw: bytes | str) -> Event | None:
    text = raw.decode() if isinstance(raw, bytes) else raw
    try:
        item, ts = text.split(":", 1)
        return Event(int(item), float(ts))
    except ValueError:
        log.warning("skipping malformed history entry %r", text)
        return None


class Store(Protocol):
    async def get_vector(self, key: str) -> np.ndarray | None: ...
    async def set_vector(self, key: str, vector: np.ndarray) -> None: ...
    async def get_history(self, user_id: str) -> list[Event]: ...
    async def append_events(self, user_id: str, events: Sequence[Event], cap: int) -> tuple[int, int]: ...
    async def ping(self) -> bool: ...
    async def check(self) -> str: ...  # 'ok', or 'degraded: ...' naming what is missing and for how long
    async def close(self) -> None: ...


class VectorLRU:
    """Bounded in-process LRU of float32 vectors with a TTL (the L1 of TieredStore, MemoryStore's vectors).
    Not thread-safe: only the event loop touches it."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries, self.ttl_s = max_entries, ttl_s
        self._entries: OrderedDict[str, tuple[float, np.ndarray]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> np.ndarray | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        self._entries.move_to_end(key)
        return hit[1].copy()  # callers may write to it; the entry stays as stored

    def put(self, key: str, vector: np.ndarray) -> None:
        self._entries[key] = (time.monotonic() + self.ttl_s, np.asarray(vector, np.float32).copy())
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class MemoryStore:
    """In-process LRU for vectors (with TTL) and histories: the embedded default, one replica only. Its
    vector hits count as L1 hits."""

    def __init__(self, max_entries: int, ttl_s: float, on_lookup: LookupHook | None = None) -> None:
        self.max_entries, self._on_lookup = max_entries, on_lookup
        self._vectors = VectorLRU(max_entries, ttl_s)
        self._histories: OrderedDict[str, dict[str, Event]] = OrderedDict()

    async def get_vector(self, key: str) -> np.ndarray | None:
        vector = self._vectors.get(key)
        if self._on_lookup is not None:
            self._on_lookup("miss" if vector is None else "l1_hit")
        return vector

    async def set_vector(self, key: str, vector: np.ndarray) -> None:
        self._vectors.put(key, vector)

    async def get_history(self, user_id: str) -> list[Event]:
        events = self._histories.get(user_id, {})
        return [events[m] for m in sorted(events, key=lambda m: (events[m].timestamp or 0.0, m))]

    async def append_events(self, user_id: str, events: Sequence[Event], cap: int) -> tuple[int, int]:
        stored = self._histories.setdefault(user_id, {})
        self._histories.move_to_end(user_id)
        added = 0
        for event in events:
            member = _member(event)
            added += member not in stored
            stored[member] = event
        for member in sorted(stored, key=lambda m: (stored[m].timestamp or 0.0, m))[
            : max(len(stored) - cap, 0)
        ]:
            del stored[member]  # oldest first, the same order as a Redis sorted set
        while len(self._histories) > self.max_entries:
            self._histories.popitem(last=False)
        return added, len(stored)

    async def ping(self) -> bool:
        return True

    async def check(self) -> str:
        return "ok"

    async def close(self) -> None:
        self._vectors.clear()
        self._histories.clear()


class RedisStore:
    """Vectors as float32 bytes with TTL; histories as sorted sets (score = timestamp, member =
    'item:timestamp'), trimmed to the newest `cap` events. cluster=True talks to a Redis Cluster (the URL
    names any node; the client discovers the rest and follows MOVED/ASK redirects).
    Circuit breaker: after a failure Redis is skipped for retry_after_s; then one call probes it while the
    others keep skipping (no herd of timeouts on a Redis that hangs). A ping (readiness) probes too."""

    def __init__(
        self,
        url: str,
        prefix: str,
        *,
        timeout_s: float,
        retry_after_s: float,
        max_connections: int,
        ttl_s: int,
        history_ttl_s: int,
        cluster: bool = False,
        on_error: ErrorHook | None = None,
    ) -> None:
        self.prefix, self.ttl_s, self.history_ttl_s = prefix, ttl_s, history_ttl_s
        self.retry_after_s, self._on_error = retry_after_s, on_error
        self._down_until = 0.0
        self._down_since: float | None = None  # monotonic time of the first failure of this outage
        self._probing = False
        client_class: Any = RedisCluster if cluster else aioredis.Redis
        self.client: Any = client_class.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # One immediate retry on a broken connection (e.g. after a Redis restart), none on a timeout: a
            # retry with backoff would hold the request; the breaker skips a Redis that is down.
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            max_connections=max_connections,
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

    async def get_vector(self, key: str) -> np.ndarray | None:
        try:
            raw = await self._call("get_vector", lambda: self.client.get(key))
        except StoreUnavailableError:
            return None
        if raw is None or len(raw) % 4:
            return None
        return np.frombuffer(raw, dtype=np.float32).copy()

    async def set_vector(self, key: str, vector: np.ndarray) -> None:
        data = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        with contextlib.suppress(StoreUnavailableError):  # a lost cache write costs a recompute, nothing more
            await self._call("set_vector", lambda: self.client.set(key, data, ex=self.ttl_s))

    async def get_history(self, user_id: str) -> list[Event]:
        key = history_key(self.prefix, user_id)
        members = await self._call("get_history", lambda: self.client.zrange(key, 0, -1))
        return [e for e in (_parse_member(m) for m in members) if e is not None]

    async def append_events(self, user_id: str, events: Sequence[Event], cap: int) -> tuple[int, int]:
        key = history_key(self.prefix, user_id)
        mapping = {_member(e): float(e.timestamp or 0.0) for e in events}

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
