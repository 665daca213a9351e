"""GET /: the try-it page, and its two static files (app/static: plain HTML, CSS and JS; no build step, no
CDN, so it works offline). The page only calls the public /v1 API from the browser; it knows no pipeline."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.errors import NotFoundError

STATIC = Path(__file__).resolve().parent.parent / "static"
MEDIA_TYPES = {"page.js": "text/javascript", "page.css": "text/css"}
# Everything from this origin, nothing inline or remote: the page builds its DOM from API text safely.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
async def page() -> FileResponse:
    return FileResponse(
        STATIC / "index.html", headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"}
    )


@router.api_route("/static/{name}", methods=["GET", "HEAD"])
async def asset(name: str) -> FileResponse:
    if name not in MEDIA_TYPES:
        raise NotFoundError(f"no static file {name!r} (the page has {', '.join(MEDIA_TYPES)})")
    return FileResponse(STATIC / name, media_type=MEDIA_TYPES[name], headers={"Cache-Control": "no-cache"})
