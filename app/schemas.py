"""HTTP request and response models: strict (no coercion but integral floats for integers, no unknown
fields), bounded, documented. Routes map them to and from app.domain values; the pipeline never sees
pydantic."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from app.domain import Event, ItemFilters, RecommendQuery, ResponseMeta

# Any id of these characters except "." and "..", which URLs resolve away (/v1/users/../events).
USER_ID_PATTERN = (
    r"^([A-Za-z0-9_:@-][A-Za-z0-9_.:@-]{0,127}"
    r"|\.[A-Za-z0-9_:@-][A-Za-z0-9_.:@-]{0,126}"
    r"|\.\.[A-Za-z0-9_.:@-]{1,126})$"
)
MAX_LIST = 10_000  # static bound; app.openapi writes the settings' (max_history, max_events) into the schema
# With the default limits the largest body the schema admits fits max_body_bytes (tests/app/test_openapi.py).
MAX_FILTER_IDS = 5_000
MAX_ITEM_ID = 2**31 - 1
HISTORY_ITEM = (
    f"a history item is an item id (an integer from 1 to {MAX_ITEM_ID}) "
    'or an object {"item_id": <item id>, "timestamp": <unix seconds, optional>}'
)


def _integral(value: Any) -> Any:
    """JSON has one number type and JSON Schema's "integer" admits 10438.0: take integral floats as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Integer = Annotated[int, BeforeValidator(_integral)]
ItemId = Annotated[
    int,
    Field(ge=1, le=MAX_ITEM_ID, description="Item id of the bundle's catalog (1..n_items)."),
    BeforeValidator(_integral),
]
Timestamp = Annotated[
    float, Field(ge=0, le=4_102_444_800, allow_inf_nan=False, description="Unix seconds (UTC).")
]
UserId = Annotated[
    str,
    Field(pattern=USER_ID_PATTERN, description="Caller's user id: [A-Za-z0-9_.:@-]{1,128}, not '.' or '..'."),
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


def _history_item(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One error saying what a history item may be, instead of one per union member."""
    try:
        return handler(value)
    except ValidationError as err:
        if isinstance(value, dict):  # an event object: say what is wrong inside it
            problem = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'][1:]) or 'item'}: {e['msg']}"
                for e in err.errors()
                if e["loc"][:1] == (HistoryEvent.__name__,)
            )
        else:
            problem = f"got {json.dumps(value)[:40]}"
        message = HISTORY_ITEM + "; {problem}"
        raise PydanticCustomError("history_item", message, {"problem": problem}) from None


HistoryItem = Annotated[ItemId | HistoryEvent, WrapValidator(_history_item)]
# JSON Schema for the rule the `_needs_a_history` validators enforce: a user_id or a history, not null.
NEEDS_A_HISTORY: dict[str, Any] = {
    "anyOf": [
        {"required": ["user_id"], "properties": {"user_id": {"type": "string"}}},
        {"required": ["history"], "properties": {"history": {"type": "array"}}},
    ]
}


class Filters(StrictModel):
    genres: list[Genre] | None = Field(
        default=None, max_length=64, description="Keep items having any of these genres."
    )
    include_item_ids: list[ItemId] | None = Field(
        default=None, max_length=MAX_FILTER_IDS, description="Only these items."
    )
    exclude_item_ids: list[ItemId] = Field(
        default_factory=list, max_length=MAX_FILTER_IDS, description="Never these."
    )


class RecommendRequest(StrictModel):
    model_config = ConfigDict(json_schema_extra=NEEDS_A_HISTORY)

    user_id: UserId | None = Field(
        default=None, description="Uses the stored history when `history` is absent."
    )
    history: list[HistoryItem] | None = Field(
        default=None, max_length=MAX_LIST, description="Oldest first; item ids or {item_id, timestamp}."
    )
    k: Integer = Field(default=10, ge=1, le=100, description="How many items to return.")
    exclude_seen: bool = Field(default=True, description="Never return items of the history.")
    filters: Filters | None = None
    model: Literal["llmsrec", "hybrid", "allmrec", "sasrec"] | None = Field(
        default=None,
        description="Default: the bundle's best by validation NDCG@10 (GET /v1/models says which and why). "
        "hybrid: LLM-SRec's and SASRec's scores blended with a weight chosen on validation. allmrec: SASRec "
        "retrieves `allmrec_candidates` items (default 20) and A-LLMRec re-ranks them by the LLM's "
        "log-likelihood of each title; k may not exceed that count.",
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
    model: Literal["llmsrec", "hybrid", "allmrec", "sasrec", "popularity"] = Field(
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
    cold: bool = Field(
        default=False,
        description="Added without interactions (`llmrec export add-items`): only model=allmrec returns it.",
    )


class ItemSearchResponse(BaseModel):
    query: str
    total: int = Field(description="Items matching the query; `items` holds the first `limit` of them.")
    items: list[ItemResponse] = Field(
        description="Best first: titles starting with the query, then containing it as words, then having "
        "every word of it (each as a word prefix); ties by popularity."
    )


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready", "degraded"] = Field(
        description="degraded: serving, with a dependency missing (a check says which, e.g. Redis down)."
    )
    bundle_version: str
    default_model: str = Field(description="Model of a recommend request naming none (GET /v1/models: why).")
    checks: dict[str, str]


class ModelEntry(BaseModel):
    name: str
    recommends: bool = Field(description="A value of `model` in POST /v1/recommend.")
    servable: bool = Field(description="Answers POST /v1/recommend now, without falling back.")
    default: bool
    valid: dict[str, Any] | None = Field(
        description="Validation metrics recorded at training (ndcg@10, hr@10, ..., protocol, split, n_users)."
    )
    comparable: bool = Field(
        description="Ranks the whole catalogue and has validation NDCG@10 on the shared 1+99 candidates: "
        "eligible as the automatic default (A-LLMRec, which re-ranks SASRec's candidates, never is)."
    )
    note: str


class ModelsResponse(BaseModel):
    bundle_version: str
    default_model: str
    default_source: Literal["setting", "manifest", "metrics", "fallback"] = Field(
        description="setting: LLMREC_DEFAULT_MODEL; manifest: the choice recorded at export; metrics: the "
        "same rule over the models served here; fallback: no comparable metrics (llmsrec, else sasrec)."
    )
    default_reason: str
    models: list[ModelEntry] = Field(description="Every model of the bundle, in manifest order.")


class ErrorBody(BaseModel):
    type: str = Field(description="Stable machine-readable kind, e.g. validation_error, unauthorized.")
    message: str = Field(description="What is wrong, naming the field or resource.")


class ErrorResponse(BaseModel):
    """The one error envelope of every 4xx/5xx."""

    error: ErrorBody


class ExplainGenreRequest(StrictModel):
    model_config = ConfigDict(json_schema_extra=NEEDS_A_HISTORY)

    user_id: UserId | None = Field(
        default=None, description="Uses the stored history when `history` is absent."
    )
    history: list[HistoryItem] | None = Field(
        default=None, max_length=MAX_LIST, description="Oldest first; item ids or {item_id, timestamp}."
    )
    top_n: Integer = Field(default=3, ge=1, le=50, description="How many genres to return.")

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


def meta_fields(meta: ResponseMeta) -> dict[str, Any]:
    """The fields RecommendResponse and ExplainGenreResponse share, from the pipeline's ResponseMeta."""
    return {
        "bundle_version": meta.bundle_version,
        "cache_hit": meta.cache_hit,
        "degraded": meta.degraded,
        "degraded_reason": meta.degraded_reason,
        "unknown_items": meta.unknown_items,
        "history_length": meta.history_length,
        "history_source": meta.history_source,
        "timing_ms": meta.timing_ms,
    }
