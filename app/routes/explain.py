"""POST /v1/explain/genre."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from app.errors import NotReadyError
from app.genre import GenreQuery, GenreService
from app.routes.deps import BODY_ERRORS, ERRORS, request_id, require_api_key, require_json_body
from app.schemas import ExplainGenreRequest, ExplainGenreResponse, GenreScore, meta_fields

router = APIRouter(prefix="/v1", tags=["explain"], dependencies=[Depends(require_api_key)], responses=ERRORS)


def get_genre_service(request: Request) -> GenreService:
    service: GenreService | None = getattr(request.app.state, "genre_service", None)
    if service is None:
        raise NotReadyError("the service is starting or stopping")
    return service


@router.post(
    "/explain/genre",
    response_model=ExplainGenreResponse,
    responses=BODY_ERRORS,
    dependencies=[Depends(require_json_body)],
)
async def explain_genre(
    body: ExplainGenreRequest, request: Request, service: GenreService = Depends(get_genre_service)
) -> ExplainGenreResponse:
    """The user's favourite genres, ranked, with one sentence; from the body's or the stored history."""
    result = await service.explain(GenreQuery(body.user_id, body.events(), body.top_n))
    return ExplainGenreResponse(
        request_id=request_id(request),
        genres=[GenreScore(name=g.name, score=g.score) for g in result.genres],
        explanation=result.explanation,
        source=result.source,
        **meta_fields(result.meta),
    )
