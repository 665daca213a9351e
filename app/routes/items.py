"""GET /v1/items (title search) and GET /v1/items/{item_id}."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from app.domain import CatalogItem
from app.pipeline import RecommendService
from app.routes.deps import ERRORS, get_service, require_api_key
from app.schemas import MAX_ITEM_ID, ItemResponse, ItemSearchResponse

router = APIRouter(
    prefix="/v1/items", tags=["items"], dependencies=[Depends(require_api_key)], responses=ERRORS
)


def to_response(item: CatalogItem) -> ItemResponse:
    return ItemResponse(
        item_id=item.item_id,
        original_id=item.original_id,
        title=item.title,
        year=item.year,
        genres=list(item.genres),
        cold=item.cold,
    )


@router.get("", response_model=ItemSearchResponse)
async def search_items(
    query: Annotated[
        str, Query(max_length=200, description="Words of the title, any case, accents optional; empty: all.")
    ] = "",
    limit: Annotated[int, Query(ge=1, le=100, description="Most items to return.")] = 20,
    service: RecommendService = Depends(get_service),
) -> ItemSearchResponse:
    """Catalog items whose title has every word of `query` (as word prefixes), best match first."""
    total, items = await service.search_items(query, limit)
    return ItemSearchResponse(query=query, total=total, items=[to_response(item) for item in items])


@router.get("/{item_id}", response_model=ItemResponse)
async def get_item(
    item_id: Annotated[int, Path(ge=1, le=MAX_ITEM_ID)], service: RecommendService = Depends(get_service)
) -> ItemResponse:
    """One catalog item of the loaded bundle."""
    return to_response(service.item(item_id))
