"""GET /v1/items/{item_id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path

from app.pipeline import RecommendService
from app.routes.deps import ERRORS, get_service, require_api_key
from app.schemas import ItemResponse

router = APIRouter(
    prefix="/v1/items", tags=["items"], dependencies=[Depends(require_api_key)], responses=ERRORS
)


@router.get("/{item_id}", response_model=ItemResponse)
async def get_item(
    item_id: Annotated[int, Path(ge=1, le=2**31 - 1)], service: RecommendService = Depends(get_service)
) -> ItemResponse:
    """One catalog item of the loaded bundle."""
    item = service.item(item_id)
    return ItemResponse(
        item_id=item.item_id,
        original_id=item.original_id,
        title=item.title,
        year=item.year,
        genres=list(item.genres),
    )
