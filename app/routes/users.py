"""POST /v1/users/{user_id}/events and GET /v1/users/{user_id}/history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from app.domain import Event
from app.pipeline import RecommendService
from app.routes.deps import BODY_ERRORS, ERRORS, get_service, require_api_key, require_json_body
from app.schemas import USER_ID_PATTERN, EventsRequest, EventsResponse, HistoryResponse, TimedEvent

router = APIRouter(
    prefix="/v1/users", tags=["users"], dependencies=[Depends(require_api_key)], responses=ERRORS
)
UserIdPath = Annotated[str, Path(pattern=USER_ID_PATTERN, description="Caller's user id.")]


@router.post(
    "/{user_id}/events",
    response_model=EventsResponse,
    responses=BODY_ERRORS,
    dependencies=[Depends(require_json_body)],
)
async def append_events(
    user_id: UserIdPath, body: EventsRequest, service: RecommendService = Depends(get_service)
) -> EventsResponse:
    """Append interactions (idempotent on item + timestamp); the history keeps the model's window."""
    stored = await service.append_events(user_id, [Event(e.item_id, e.timestamp) for e in body.events])
    return EventsResponse(
        user_id=user_id, added=stored.added, history_length=stored.length, unknown_items=stored.unknown_items
    )


@router.get("/{user_id}/history", response_model=HistoryResponse)
async def history(user_id: UserIdPath, service: RecommendService = Depends(get_service)) -> HistoryResponse:
    """The stored history, oldest first (empty for a user never seen)."""
    events = await service.history(user_id)
    return HistoryResponse(
        user_id=user_id, events=[TimedEvent(item_id=e.item_id, timestamp=e.timestamp or 0.0) for e in events]
    )
