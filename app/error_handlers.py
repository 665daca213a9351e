"""The one JSON error envelope {"error": {"type", "message"}} for every failure: FastAPI handlers that map
domain errors (app.errors), validation errors and unknown routes to 4xx; nothing an input does gives a 500."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import ServiceError, UnauthorizedError

log = logging.getLogger(__name__)


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
