"""Operations: /healthz (liveness), /readyz (bundle, store, LLM backend), /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response, Security
from fastapi.responses import JSONResponse

from app.pipeline import RecommendService
from app.routes.deps import API_KEY_HEADER, check_api_key, get_service
from app.schemas import ErrorResponse, HealthResponse, ReadyResponse

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """The process is alive (no dependency is checked)."""
    return HealthResponse(status="ok")


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ErrorResponse}})
async def readyz(service: RecommendService = Depends(get_service)) -> ReadyResponse | JSONResponse:
    """Ready to serve: bundle loaded, store reachable, LLM backend healthy; 503 naming what is not. A Redis
    outage answers 200 with status 'degraded' and the store check saying since when (see readiness)."""
    ready, checks = await service.readiness()
    if ready:
        degraded = any(state.startswith("degraded") for state in checks.values())
        return ReadyResponse(
            status="degraded" if degraded else "ready",
            bundle_version=service.bundle.version,
            default_model=service.default.name,
            checks=checks,
        )
    problems = "; ".join(f"{name}: {state}" for name, state in checks.items() if not state.startswith("ok"))
    error = {"type": "not_ready", "message": problems}
    return JSONResponse({"error": error, "checks": checks}, status_code=503)


@router.get("/metrics", response_class=Response, responses={401: {"model": ErrorResponse}})
async def metrics(request: Request, key: str | None = Security(API_KEY_HEADER)) -> Response:
    """Prometheus text format; needs an API key when keys are set and metrics_public is false."""
    if not request.app.state.settings.metrics_public:
        check_api_key(request, key)
    body, content_type = request.app.state.metrics.render()
    return Response(body, media_type=content_type)
