"""Small typed values the pipeline works on; no web framework, no pydantic, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ModelName = Literal["llmsrec", "hybrid", "allmrec", "sasrec"]
Strategy = Literal["llmsrec", "hybrid", "allmrec", "sasrec", "popularity"]
HistorySource = Literal["body", "stored", "none"]


@dataclass(frozen=True)
class Event:
    """One interaction; timestamp in unix seconds (None when the caller did not give one)."""

    item_id: int
    timestamp: float | None = None


@dataclass(frozen=True)
class ItemFilters:
    """Caller filters: keep items with any of `genres` (if given), only `include_ids` (if given), never
    `exclude_ids`."""

    genres: tuple[str, ...] = ()
    include_ids: tuple[int, ...] | None = None
    exclude_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class RecommendQuery:
    user_id: str | None
    history: tuple[Event, ...] | None  # None → the user's stored history
    k: int = 10
    exclude_seen: bool = True
    filters: ItemFilters = field(default_factory=ItemFilters)
    model: ModelName | None = None  # None → the service's default (app.serving_models)


@dataclass(frozen=True)
class RankedItem:
    item_id: int
    title: str
    score: float


@dataclass
class Recommendation:
    items: list[RankedItem]
    bundle_version: str
    strategy: Strategy
    cache_hit: bool
    degraded: bool
    degraded_reason: str | None
    unknown_items: list[int]
    history_length: int
    history_source: HistorySource
    timing_ms: dict[str, float]


@dataclass(frozen=True)
class CatalogItem:
    item_id: int
    original_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]


@dataclass(frozen=True)
class AppendResult:
    """Outcome of an events append: how many events were new, the capped length, unknown item ids."""

    added: int
    length: int
    unknown_items: list[int]
