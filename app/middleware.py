"""Pure ASGI middleware: request ids + per-route metrics around every request, and the body byte limit
(413 in the error envelope before any parsing). Knows nothing of routes or the pipeline."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.error_handlers import envelope
from app.metrics import Metrics

REQUEST_ID_HEADER = "x-request-id"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route that served the request: the one FastAPI recorded, else (the docs, the
    schema, a 413 answered before routing) the first of `routes` matching as the router would, else
    'unmatched' (a path of no route: the label set stays bounded)."""
    route: Any = scope.get("route")
    if getattr(route, "path", None):
        return str(route.path)
    probe = {"type": "http", "path": scope["path"], "root_path": "", "method": scope["method"]}
    for wanted in (Match.FULL, Match.PARTIAL):  # a method mismatch (405) is a partial match
        for candidate in routes:
            path = getattr(candidate, "path", None)
            if path and candidate.matches(probe)[0] == wanted:
                return str(path)
    return "unmatched"


class RequestContextMiddleware:
    """Request id (the caller's X-Request-ID if well-formed, else a new one) in scope state and the
    response header; request count and latency by route template (bounded label values). `routes`: every
    route with its full path, for requests that routing never labels (see route_template)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute] = ()) -> None:
        self.app, self.metrics, self.routes = app, metrics, tuple(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, REQUEST_ID_HEADER.encode())
        request_id = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        start = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            template = route_template(scope, self.routes)
            self.metrics.http(template, scope["method"], status, time.perf_counter() - start)


async def _too_large(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    message = f"request body exceeds {limit} bytes (max_body_bytes)"
    await envelope(413, "payload_too_large", message)(scope, receive, send)


class BodyLimitMiddleware:
    """Read the body up to `max_bytes` (declared Content-Length or streamed, whichever shows first) and
    answer 413 beyond it; otherwise replay the body to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(scope, receive, send, self.max_bytes)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _too_large(scope, receive, send, self.max_bytes)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)
