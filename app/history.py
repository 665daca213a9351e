"""Histories: the one a request is about — the body's (within max_history), else the user's stored one, a
store outage degrading to an empty history with the reason — split into the items the bundle knows and the
ones it skips; and the stored histories themselves (append, read), capped to the bundle's window.
Framework-free: no HTTP, no pydantic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from app.bundle import Catalog
from app.cache import Store
from app.domain import AppendResult, Event, HistorySource, RequestLimits, ResponseMeta
from app.errors import InvalidRequestError, StoreUnavailableError
from app.metrics import Metrics


@dataclass(frozen=True)
class History:
    """A request's history: every event, where it came from, the events of known items (in order), the
    sorted distinct unknown ids, and why the stored history was unavailable (None when it was not)."""

    events: list[Event]
    source: HistorySource
    known: list[Event]
    unknown: list[int]
    problem: str | None = None

    @property
    def known_ids(self) -> list[int]:
        return [e.item_id for e in self.known]

    def response_meta(
        self,
        bundle_version: str,
        cache_hit: bool,
        degraded_reason: str | None,
        timing_ms: dict[str, float],
        total_ms: float,
    ) -> ResponseMeta:
        """The metadata of an answer computed from this history; a stored history that was unavailable
        counts as the degraded reason when the answer itself did not degrade."""
        return ResponseMeta(
            bundle_version=bundle_version,
            cache_hit=cache_hit,
            degraded_reason=degraded_reason or self.problem,
            unknown_items=self.unknown,
            history_length=len(self.known),
            history_source=self.source,
            timing_ms={**timing_ms, "total": total_ms},
        )


class Histories:
    def __init__(
        self, store: Store, catalog: Catalog, limits: RequestLimits, metrics: Metrics, window: int
    ) -> None:
        """window: the newest events a stored history keeps (the longest history any model reads)."""
        self.store, self.catalog, self.limits, self.metrics, self.window = (
            store,
            catalog,
            limits,
            metrics,
            window,
        )

    async def resolve(
        self, user_id: str | None, history: Sequence[Event] | None, outage_fallback: str
    ) -> History:
        """The body's history, else the user's stored one; a store outage is an empty history whose problem
        ends in `outage_fallback` (what answers instead)."""
        if history is not None:
            if len(history) > self.limits.max_history:
                raise InvalidRequestError(
                    f"history has {len(history)} events; the limit is {self.limits.max_history} (max_history)"
                )
            return self._split(list(history), "body")
        assert user_id is not None  # the request schemas require one of the two
        try:
            stored = await self.store.get_history(user_id)
        except StoreUnavailableError as err:
            self.metrics.fallbacks.labels("history_unavailable").inc()
            problem = f"stored history unavailable ({err.message}); {outage_fallback}"
            return History([], "none", [], [], problem)
        return self._split(stored, "stored" if stored else "none")

    def _split(self, events: list[Event], source: HistorySource) -> History:
        known = [e for e in events if self.catalog.get(e.item_id) is not None]
        unknown = sorted({e.item_id for e in events} - {e.item_id for e in known})
        return History(events, source, known, unknown)

    async def append(self, user_id: str, events: Sequence[Event]) -> AppendResult:
        """Idempotent on (item, timestamp); the stored history keeps the newest `window` events."""
        if len(events) > self.limits.max_events:
            raise InvalidRequestError(
                f"{len(events)} events in one request; the limit is {self.limits.max_events} (max_events)"
            )
        added, length = await self.store.append_events(user_id, events, self.window)
        unknown = sorted({e.item_id for e in events if self.catalog.get(e.item_id) is None})
        return AppendResult(added, length, unknown)

    async def read(self, user_id: str) -> list[Event]:
        return await self.store.get_history(user_id)
