"""The OpenAPI document of one app instance: FastAPI's schema made true to the settings and the bundle it
serves (list limits, body size, the bundle's models and genres, whether an API key is needed), so that a
request the schema admits is one the service accepts. Knows component names and paths, not the pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.pipeline import RecommendService
from app.settings import Settings
from models.bundle import Manifest
from models.model_choice import RECOMMENDERS


@dataclass(frozen=True)
class Contract:
    """What the schema says beyond the request models: the values of this instance."""

    models: tuple[str, ...]  # values of `model` in POST /v1/recommend
    allmrec_default: bool  # a request naming no model is re-ranked by A-LLMRec (k ≤ its candidates)
    allmrec_candidates: int
    genres: tuple[str, ...]  # filters.genres values; empty = not known yet (no enum written)
    max_history: int
    max_events: int
    max_body_bytes: int
    api_keys: bool
    metrics_public: bool


def contract(settings: Settings, manifest: Manifest, service: RecommendService | None) -> Contract:
    """From the running service when it is loaded, else from the manifest and settings alone."""
    if service is not None:
        models, genres = service.servable, service.bundle.catalog.genres
        allmrec_default = service.default.name == "allmrec"
    else:
        models = tuple(m for m in manifest.models if m in RECOMMENDERS)
        genres, allmrec_default = manifest.dataset.genres, settings.default_model == "allmrec"
    return Contract(
        models=tuple(models),
        allmrec_default=allmrec_default,
        allmrec_candidates=settings.allmrec_candidates,
        genres=tuple(genres),
        max_history=settings.limits.max_history,
        max_events=settings.limits.max_events,
        max_body_bytes=settings.limits.max_body_bytes,
        api_keys=bool(settings.api_keys),
        metrics_public=settings.metrics_public,
    )


def find_branch(schema: dict[str, Any], key: str) -> dict[str, Any]:
    """The part of an optional field's schema (`anyOf: [X, null]`) that has `key`, or the schema itself."""
    for option in schema.get("anyOf", [schema]):
        if key in option:
            found: dict[str, Any] = option
            return found
    raise KeyError(f"no {key!r} in {schema}")


def make_true(schema: dict[str, Any], c: Contract) -> dict[str, Any]:
    """Write the instance's limits, values and auth into FastAPI's generated schema (in place)."""
    parts = schema["components"]["schemas"]
    for request in ("RecommendRequest", "ExplainGenreRequest"):
        find_branch(parts[request]["properties"]["history"], "maxItems")["maxItems"] = c.max_history
    parts["EventsRequest"]["properties"]["events"]["maxItems"] = c.max_events
    recommend = parts["RecommendRequest"]
    find_branch(recommend["properties"]["model"], "enum")["enum"] = list(c.models)
    if c.genres:
        find_branch(parts["Filters"]["properties"]["genres"], "items")["items"]["enum"] = list(c.genres)
    if "allmrec" in c.models:  # A-LLMRec re-ranks allmrec_candidates items: k may not exceed them
        asks_allmrec: dict[str, Any] = {"required": ["model"], "properties": {"model": {"const": "allmrec"}}}
        if c.allmrec_default:  # an absent or null model means allmrec too
            asks_allmrec = {"properties": {"model": {"enum": ["allmrec", None]}}}
        limit = {"properties": {"k": {"maximum": c.allmrec_candidates}}}
        recommend["allOf"] = [{"if": asks_allmrec, "then": limit}]
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            if "requestBody" in operation:
                operation["requestBody"]["description"] = (
                    f"JSON sent with content-type: application/json, at most {c.max_body_bytes} bytes "
                    "(max_body_bytes; a larger body gets 413)."
                )
                operation["requestBody"]["x-max-body-bytes"] = c.max_body_bytes
            if not c.api_keys or (path == "/metrics" and c.metrics_public):
                operation.pop("security", None)
                operation["responses"].pop("401", None)
    if not c.api_keys:
        schema["components"].pop("securitySchemes", None)
    return schema


def install_openapi(app: FastAPI, settings: Settings, manifest: Manifest) -> None:
    """Serve the true schema at /openapi.json (cached once the bundle is loaded)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        service: RecommendService | None = app.state.service
        schema = get_openapi(
            title=app.title,
            version=app.version,
            openapi_version=app.openapi_version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        make_true(schema, contract(settings, manifest, service))
        if service is not None:  # before the lifespan the bundle's genres may be unknown: do not keep that
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to extend the schema
