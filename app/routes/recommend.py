"""POST /v1/recommend."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.pipeline import RecommendService
from app.routes.deps import ERRORS, get_service, request_id, require_api_key
from app.schemas import RecommendedItem, RecommendRequest, RecommendResponse

router = APIRouter(
    prefix="/v1", tags=["recommend"], dependencies=[Depends(require_api_key)], responses=ERRORS
)


@router.post("/recommend", response_model=RecommendResponse)
async def recommend(
    body: RecommendRequest, request: Request, service: RecommendService = Depends(get_service)
) -> RecommendResponse:
    """Top-k items for a history given in the body or stored for `user_id`."""
    result = await service.recommend(body.to_query())
    return RecommendResponse(
        request_id=request_id(request),
        bundle_version=result.bundle_version,
        model=result.strategy,
        items=[RecommendedItem(item_id=i.item_id, title=i.title, score=i.score) for i in result.items],
        cache_hit=result.cache_hit,
        degraded=result.degraded,
        degraded_reason=result.degraded_reason,
        unknown_items=result.unknown_items,
        history_length=result.history_length,
        history_source=result.history_source,
        timing_ms=result.timing_ms,
    )
