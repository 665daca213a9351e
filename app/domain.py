"""Small typed values the pipeline works on; no web framework, no pydantic, no torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, ClassVar, Literal

from annotated_types import Ge, Le

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


@dataclass(frozen=True)
class RequestLimits:
    """Sizes a request may have: env LLMREC_<FIELD> (e.g. LLMREC_MAX_HISTORY); the bounds are checked when
    app.settings reads them."""

    # how app.settings (pydantic) validates this group: no unknown field, the docstrings as descriptions
    __pydantic_config__: ClassVar[dict[str, object]] = {"extra": "forbid", "use_attribute_docstrings": True}

    max_history: Annotated[int, Ge(1), Le(10_000)] = 1_000
    """Most events in a request's history (longer → 422)."""
    max_events: Annotated[int, Ge(1), Le(10_000)] = 1_000
    """Most events in one events POST (more → 422)."""
    max_body_bytes: Annotated[int, Ge(1024), Le(64 * 1024 * 1024)] = 256 * 1024
    """Largest accepted request body (larger → 413)."""


@dataclass(frozen=True)
class ResponseMeta:
    """What every answer computed from a history reports besides its result: which bundle, whether the
    LLM's answer came from the cache, what degraded and why, what was skipped and how long each stage took."""

    bundle_version: str
    cache_hit: bool
    degraded_reason: str | None  # None: nothing degraded
    unknown_items: list[int]  # history items unknown to the bundle (skipped), sorted
    history_length: int  # known history items used
    history_source: HistorySource
    timing_ms: dict[str, float]

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None


@dataclass(frozen=True)
class Recommendation:
    items: list[RankedItem]
    strategy: Strategy
    meta: ResponseMeta


@dataclass(frozen=True)
class CatalogItem:
    item_id: int
    original_id: str
    title: str
    year: int | None
    genres: tuple[str, ...]
    cold: bool = False  # added by `llmrec export add-items`: no interactions, only A-LLMRec ranks it


@dataclass(frozen=True)
class AppendResult:
    """Outcome of an events append: how many events were new, the capped length, unknown item ids."""

    added: int
    length: int
    unknown_items: list[int]
