"""Request-scoped dependencies: the service built in the lifespan, the request id, the API-key check, the
JSON body check; and the error responses each kind of route documents."""

from __future__ import annotations

import hmac

from fastapi import Request, Security
from fastapi.security import APIKeyHeader

from app.errors import NotReadyError, UnauthorizedError, UnsupportedMediaTypeError
from app.pipeline import RecommendService
from app.schemas import ErrorResponse

API_KEY_HEADER = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="Required when API keys are set."
)


def _documented(texts: dict[int, str]) -> dict[int | str, dict[str, object]]:
    return {code: {"model": ErrorResponse, "description": text} for code, text in texts.items()}


ERRORS = _documented(  # every /v1 route
    {
        401: "Missing or invalid X-API-Key (only when API keys are set)",
        404: "Not found: an unknown item, or a path that names no route",
        422: "Invalid request: the message names the field and the rule",
        503: "Not ready (starting or stopping), or the history store is unreachable",
    }
)
BODY_ERRORS = _documented(  # routes that read a JSON body
    {
        400: "The body cannot be decoded (not UTF-8)",
        413: "Body larger than max_body_bytes",
        415: "The body was not sent with content-type: application/json",
    }
)


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


async def require_json_body(request: Request) -> None:
    """A body route reads JSON only: anything else (a form, no content-type) gets a 415 saying so, rather than
    a validation error about the body's shape. Runs after the API-key check and before body validation."""
    given = request.headers.get("content-type", "")
    media = given.split(";", 1)[0].strip().lower()
    if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
        return
    got = f"got content-type: {given}" if given else "no content-type was sent"
    raise UnsupportedMediaTypeError(
        f"the body must be JSON, sent with the header content-type: application/json ({got})"
    )
