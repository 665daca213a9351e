"""Typed domain errors and the one JSON error envelope {"error": {"type", "message"}} for every failure.
Handlers map domain errors, validation errors and unknown routes to 4xx; nothing an input does gives a 500."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ServiceError(Exception):
    """An error a client can see: HTTP status, a stable type string and a message naming the problem."""

    status = 400
    type = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequestError(ServiceError):
    status, type = 422, "invalid_request"


class NotFoundError(ServiceError):
    status, type = 404, "not_found"


class UnauthorizedError(ServiceError):
    status, type = 401, "unauthorized"


class UnsupportedMediaTypeError(ServiceError):
    """A body sent without `content-type: application/json` (curl -d sends a form by default)."""

    status, type = 415, "unsupported_media_type"


class StoreUnavailableError(ServiceError):
    """The history store (Redis) cannot be reached: reads and writes of stored histories fail honestly."""

    status, type = 503, "store_unavailable"


class NotReadyError(ServiceError):
    """The service is starting or stopping."""

    status, type = 503, "not_ready"


class BackendError(Exception):
    """The LLM backend failed or timed out; the pipeline falls back to SASRec, clients never see this."""


class LoadShedError(BackendError):
    """The LLM queue is too long to answer within the shedding budget; the caller falls back at once."""


class StartupError(Exception):
    """The service refuses to start (bad bundle, unusable LLM, bad settings); the message says why."""


def envelope(status: int, type_: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"type": type_, "message": message}}, status_code=status, headers=headers)


def format_validation(errors: Sequence[Any]) -> str:
    """'body.k: Input should be less than or equal to 100; ...' from pydantic's error list."""
    parts = []
    for err in list(errors)[:10]:
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "json_invalid":  # loc = ("body", character offset)
            detail = (err.get("ctx") or {}).get("error", "")
            parts.append(f"body: invalid JSON at character {loc[-1] if loc else '?'}: {detail}".rstrip(": "))
            continue
        where = ".".join(str(p) for p in loc) or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    more = len(errors) - len(parts)
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


async def _service_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    headers = {"WWW-Authenticate": "ApiKey"} if isinstance(exc, UnauthorizedError) else None
    return envelope(exc.status, exc.type, exc.message, headers)


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return envelope(422, "validation_error", format_validation(exc.errors()))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    types = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
    type_ = types.get(exc.status_code, "http_error")
    message = str(exc.detail)
    if exc.status_code == 400:  # FastAPI's answer to a body it cannot decode (not UTF-8, say)
        message += ": send a UTF-8 JSON body with content-type: application/json"
    return envelope(exc.status_code, type_, message, getattr(exc, "headers", None))


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    return envelope(500, "internal_error", "internal error; see the service log")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
