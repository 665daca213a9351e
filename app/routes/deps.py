"""Request-scoped dependencies: the service built in the lifespan, the request id, the API-key check."""

from __future__ import annotations

import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from app.errors import NotReadyError, UnauthorizedError
from app.pipeline import RecommendService
from app.schemas import ErrorResponse

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Required when API keys are set."
)
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        401: "Missing or invalid X-API-Key",
        404: "Not found",
        413: "Body too large",
        422: "Invalid request",
    }.items()
}


def get_service(request: Request) -> RecommendService:
    service: RecommendService | None = getattr(request.app.state, "service", None)
    if service is None:
        raise NotReadyError("the service is starting or stopping")
    return service


def request_id(request: Request) -> str:
    return str(request.state.request_id)


def check_api_key(request: Request, key: str | None) -> None:
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        return
    if not key:
        raise UnauthorizedError("missing X-API-Key header")
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
        raise UnauthorizedError("invalid API key")


async def require_api_key(request: Request, key: str | None = Security(API_KEY_HEADER)) -> None:
    check_api_key(request, key)
