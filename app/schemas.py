"""HTTP request and response models: strict (no coercion, no unknown fields), bounded, documented.
Routes map them to and from app.domain values; the pipeline never sees pydantic."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.domain import Event, ItemFilters, RecommendQuery

USER_ID_PATTERN = r"^[A-Za-z0-9_.:@-]{1,128}$"
MAX_LIST = 10_000  # static bound; the settings (max_history, max_events) are usually tighter

ItemId = Annotated[
    int, Field(ge=1, le=2**31 - 1, description="Item id of the bundle's catalog (1..n_items).")
]
Timestamp = Annotated[
    float, Field(ge=0, le=4_102_444_800, allow_inf_nan=False, description="Unix seconds (UTC).")
]
UserId = Annotated[
    str, Field(pattern=USER_ID_PATTERN, description="Caller's user id: [A-Za-z0-9_.:@-]{1,128}.")
]
Genre = Annotated[str, Field(min_length=1, max_length=64)]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class HistoryEvent(StrictModel):
    item_id: ItemId
    timestamp: Timestamp | None = None


class TimedEvent(StrictModel):
    item_id: ItemId
    timestamp: Timestamp


class Filters(StrictModel):
    genres: list[Genre] | None = Field(
        default=None, max_length=64, description="Keep items having any of these genres."
    )
    include_item_ids: list[ItemId] | None = Field(
        default=None, max_length=MAX_LIST, description="Only these items."
    )
    exclude_item_ids: list[ItemId] = Field(
        default_factory=list, max_length=MAX_LIST, description="Never these."
    )


class RecommendRequest(StrictModel):
    user_id: UserId | None = Field(
        default=None, description="Uses the stored history when `history` is absent."
    )
    history: list[ItemId | HistoryEvent] | None = Field(
        default=None, max_length=MAX_LIST, description="Oldest first; item ids or {item_id, timestamp}."
    )
    k: int = Field(default=10, ge=1, le=100, description="How many items to return.")
    exclude_seen: bool = Field(default=True, description="Never return items of the history.")
    filters: Filters | None = None
    model: Literal["llmsrec", "allmrec", "sasrec"] | None = Field(
        default=None,
        description="Default: llmsrec when the bundle has it, else sasrec. allmrec: SASRec retrieves "
        "`allmrec_candidates` items (default 20) and A-LLMRec re-ranks them by the LLM's log-likelihood of "
        "each title; k may not exceed that count.",
    )

    @model_validator(mode="after")
    def _needs_a_history(self) -> RecommendRequest:
        if self.user_id is None and self.history is None:
            raise ValueError("give a user_id (stored history) or a history")
        return self

    def to_query(self) -> RecommendQuery:
        history = None
        if self.history is not None:
            history = tuple(
                Event(h) if isinstance(h, int) else Event(h.item_id, h.timestamp) for h in self.history
            )
        f = self.filters or Filters()
        filters = ItemFilters(
            genres=tuple(f.genres or ()),
            include_ids=None if f.include_item_ids is None else tuple(f.include_item_ids),
            exclude_ids=tuple(f.exclude_item_ids),
        )
        return RecommendQuery(self.user_id, history, self.k, self.exclude_seen, filters, self.model)


class RecommendedItem(BaseModel):
    item_id: int
    title: str
    score: float


class RecommendResponse(BaseModel):
    request_id: str
    bundle_version: str
    model: Literal["llmsrec", "allmrec", "sasrec", "popularity"] = Field(
        description="What ranked the items; 'popularity' for an empty (or all-unknown) history."
    )
    items: list[RecommendedItem]
    cache_hit: bool
    degraded: bool = Field(description="True when a dependency failed and a fallback answered.")
    degraded_reason: str | None = None
    unknown_items: list[int] = Field(description="History items unknown to the bundle (skipped).")
    history_length: int = Field(description="Known history items used.")
    history_source: Literal["body", "stored", "none"]
    timing_ms: dict[str, float]


class EventsRequest(StrictModel):
    events: list[TimedEvent] = Field(min_length=1, max_length=MAX_LIST)


class EventsResponse(BaseModel):
    user_id: str
    added: int = Field(description="Events not stored before (appends are idempotent on item + timestamp).")
    history_length: int
    unknown_items: list[int] = Field(description="Stored, but unknown to the current bundle.")


class HistoryResponse(BaseModel):
    user_id: str
    events: list[TimedEvent]


class ItemResponse(BaseModel):
    item_id: int
    original_id: str
    title: str
    year: int | None
    genres: list[str]


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready"]
    bundle_version: str
    checks: dict[str, str]


class ErrorBody(BaseModel):
    type: str = Field(description="Stable machine-readable kind, e.g. validation_error, unauthorized.")
    message: str = Field(description="What is wrong, naming the field or resource.")


class ErrorResponse(BaseModel):
    """The one error envelope of every 4xx/5xx."""

    error: ErrorBody


class ExplainGenreRequest(StrictModel):
    user_id: UserId | None = Field(
        default=None, description="Uses the stored history when `history` is absent."
    )
    history: list[ItemId | HistoryEvent] | None = Field(
        default=None, max_length=MAX_LIST, description="Oldest first; item ids or {item_id, timestamp}."
    )
    top_n: int = Field(default=3, ge=1, le=50, description="How many genres to return.")

    @model_validator(mode="after")
    def _needs_a_history(self) -> ExplainGenreRequest:
        if self.user_id is None and self.history is None:
            raise ValueError("give a user_id (stored history) or a history")
        return self

    def events(self) -> tuple[Event, ...] | None:
        if self.history is None:
            return None
        return tuple(Event(h) if isinstance(h, int) else Event(h.item_id, h.timestamp) for h in self.history)


class GenreScore(BaseModel):
    name: str
    score: float = Field(
        description="allmrec: softmax over the vocabulary of each genre name's mean token log-likelihood; "
        "history_counts: share of the history's items with the genre; popularity: share of interactions."
    )


class ExplainGenreResponse(BaseModel):
    request_id: str
    bundle_version: str
    genres: list[GenreScore] = Field(description="Best first, at most top_n.")
    explanation: str = Field(description="One sentence: generated by the LLM (allmrec) or from the counts.")
    source: Literal["allmrec", "history_counts", "popularity"] = Field(
        description="What ranked the genres; 'popularity' for an empty (or all-unknown) history."
    )
    cache_hit: bool
    degraded: bool = Field(description="True when the LLM (or the bundle's genre model) was unavailable.")
    degraded_reason: str | None = None
    unknown_items: list[int] = Field(description="History items unknown to the bundle (skipped).")
    history_length: int = Field(description="Known history items used.")
    history_source: Literal["body", "stored", "none"]
    timing_ms: dict[str, float]
