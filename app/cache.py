"""The store's interface and its in-process parts: cached LLM answers as bytes under content-addressed keys
(a Codec turns them into vectors or JSON values and back), stored histories, and a bounded LRU of bytes with a
TTL. Redis lives in app.redis_store, the two levels in app.tiered_cache. A cache failure never fails a
request: it is served as a miss. Knows nothing of models or HTTP."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, Protocol, TypeVar

import numpy as np

from app.domain import Event

log = logging.getLogger(__name__)
T = TypeVar("T")
ErrorHook = Callable[[str], None]  # called with the failed operation's name
CacheResult = Literal["l1_hit", "l2_hit", "miss"]
LookupHook = Callable[[CacheResult], None]  # called once per cache lookup


@dataclass(frozen=True)
class Codec(Generic[T]):
    """How one kind of cached value becomes bytes and back. `decode` answers None for bytes it cannot read
    (a corrupt or foreign entry, served as a miss); `name` names the store operations (get_<name>)."""

    name: str
    encode: Callable[[T], bytes]
    decode: Callable[[bytes], T | None]


def _vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def _bytes_vector(raw: bytes) -> np.ndarray | None:
    return None if len(raw) % 4 else np.frombuffer(raw, dtype=np.float32).copy()  # a copy: callers may write


VECTOR: Codec[np.ndarray] = Codec("vector", _vector_bytes, _bytes_vector)  # float32, 4 bytes per value


def json_codec(name: str, to_json: Callable[[T], Any], from_json: Callable[[Any], T]) -> Codec[T]:
    """A codec of values kept as UTF-8 JSON; `from_json` raising KeyError, TypeError or ValueError (a value
    of another shape) makes the entry a miss."""

    def decode(raw: bytes) -> T | None:
        try:
            return from_json(json.loads(raw))
        except (KeyError, TypeError, ValueError):  # json.JSONDecodeError and UnicodeDecodeError included
            return None

    return Codec(name, lambda value: json.dumps(to_json(value)).encode(), decode)


def content_key(prefix: str, kind: str, bundle_version: str, content: Any) -> str:
    """Key of a cached LLM answer: bundle version + sha256 of exactly what the prompt reads (`content`, JSON).
    Content-addressed, not per user: users (and anonymous requests) with the same recent history share one
    entry, and only single-key GET/SET touch it, so it needs no hash tag; its slot follows the digest, which
    spreads entries over every Redis Cluster node."""
    digest = hashlib.sha256(json.dumps(content).encode()).hexdigest()
    return f"{prefix}:{kind}:{bundle_version}:{digest}"


def history_key(prefix: str, user_id: str) -> str:
    """Hash-tagged by user ({user:ID}) so every key of one user lands in one Redis Cluster slot and the
    MULTI of append_events never crosses slots. User ids cannot hold braces (app.schemas.USER_ID_PATTERN)."""
    return f"{prefix}:hist:{{user:{user_id}}}"


def event_member(event: Event) -> str:
    """'item:timestamp', the identity of an event (appends are idempotent on it)."""
    ts = float(event.timestamp or 0.0)
    return f"{event.item_id}:{int(ts) if ts.is_integer() else repr(ts)}"


class Store(Protocol):
    async def get(self, key: str, codec: Codec[T]) -> T | None: ...  # counted as one cache lookup
    async def set(self, key: str, value: T, codec: Codec[T]) -> None: ...
    async def get_history(self, user_id: str) -> list[Event]: ...
    async def append_events(self, user_id: str, events: Sequence[Event], cap: int) -> tuple[int, int]: ...
    async def ping(self) -> bool: ...
    async def check(self) -> str: ...  # 'ok', or 'degraded: ...' naming what is missing and for how long
    async def close(self) -> None: ...


class BytesLRU:
    """Bounded in-process LRU of byte strings with a TTL (the L1 of TieredStore, MemoryStore's values).
    Not thread-safe: only the event loop touches it."""

    def __init__(self, max_entries: int, ttl_s: float) -> None:
        self.max_entries, self.ttl_s = max_entries, ttl_s
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            self._entries.pop(key, None)
            return None
        self._entries.move_to_end(key)
        return hit[1]

    def put(self, key: str, raw: bytes) -> None:
        self._entries[key] = (time.monotonic() + self.ttl_s, raw)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class MemoryStore:
    """In-process LRU for cached values (with TTL) and histories: the embedded default, one replica only.
    Its hits count as L1 hits."""

    def __init__(self, max_entries: int, ttl_s: float, on_lookup: LookupHook | None = None) -> None:
        self.max_entries, self._on_lookup = max_entries, on_lookup
        self._values = BytesLRU(max_entries, ttl_s)
        self._histories: OrderedDict[str, dict[str, Event]] = OrderedDict()

    async def get(self, key: str, codec: Codec[T]) -> T | None:
        raw = self._values.get(key)
        value = None if raw is None else codec.decode(raw)
        if self._on_lookup is not None:
            self._on_lookup("miss" if value is None else "l1_hit")
        return value

    async def set(self, key: str, value: T, codec: Codec[T]) -> None:
        self._values.put(key, codec.encode(value))

    async def get_history(self, user_id: str) -> list[Event]:
        events = self._histories.get(user_id, {})
        return [events[m] for m in sorted(events, key=lambda m: (events[m].timestamp or 0.0, m))]

    async def append_events(self, user_id: str, events: Sequence[Event], cap: int) -> tuple[int, int]:
        stored = self._histories.setdefault(user_id, {})
        self._histories.move_to_end(user_id)
        added = 0
        for event in events:
            member = event_member(event)
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
        self._values.clear()
        self._histories.clear()
