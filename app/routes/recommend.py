"""POST /v1/recommend, and GET /v1/models: the models it can use, with their validation metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.pipeline import RecommendService
from app.routes.deps import BODY_ERRORS, ERRORS, get_service, request_id, require_api_key, require_json_body
from app.schemas import (
    ModelEntry,
    ModelsResponse,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    meta_fields,
)

router = APIRouter(
    prefix="/v1", tags=["recommend"], dependencies=[Depends(require_api_key)], responses=ERRORS
)


@router.post(
    "/recommend",
    response_model=RecommendResponse,
    responses=BODY_ERRORS,
    dependencies=[Depends(require_json_body)],
)
async def recommend(
    body: RecommendRequest, request: Request, service: RecommendService = Depends(get_service)
) -> RecommendResponse:
    """Top-k items for a history given in the body or stored for `user_id`."""
    result = await service.recommend(body.to_query())
    return RecommendResponse(
        request_id=request_id(request),
        model=result.strategy,
        items=[RecommendedItem(item_id=i.item_id, title=i.title, score=i.score) for i in result.items],
        **meta_fields(result.meta),
    )


@router.get("/models", response_model=ModelsResponse)
async def models(service: RecommendService = Depends(get_service)) -> ModelsResponse:
    """The bundle's models with their validation metrics, which one answers when `model` is omitted and why,
    and whether each serves now."""
    return ModelsResponse(
        bundle_version=service.bundle.version,
        default_model=service.default.name,
        default_source=service.default.source,
        default_reason=service.default.reason,
        models=[
            ModelEntry(
                name=m.name,
                recommends=m.recommends,
                servable=m.servable,
                default=m.default,
                valid=None if m.valid is None else dict(m.valid),
                comparable=m.comparable,
                note=m.note,
            )
            for m in service.models()
        ],
    )
