"""`create_app(settings)`: verify the bundle (refuse a bad one at once), then in the lifespan build the heavy
parts — bundle weights, store, LLM backend, micro-batcher, rankers — and close them in reverse order."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI

from app.allmrec import ALLMRecReranker, RerankConfig, rank_batch_fn
from app.backends.base import LLMBackend, create_backend
from app.batcher import EncodeJob, MicroBatcher
from app.bundle import ServingBundle, load_bundle, verify
from app.cache import Store
from app.errors import install_error_handlers
from app.genre import build_genre_service
from app.metrics import Metrics
from app.middleware import BodyLimitMiddleware, RequestContextMiddleware
from app.openapi import install_openapi
from app.pipeline import PipelineLimits, RecommendService
from app.retrieval import CandidateFilter, PopularityRanker, Ranker
from app.routes import explain, items, ops, page, recommend, users
from app.settings import Settings
from app.tiered_cache import create_store
from models.bundle import Manifest
from models.hybrid import hybrid_item_table

log = logging.getLogger(__name__)
__version__ = "0.1.0"


def create_app(settings: Settings, *, backend: LLMBackend | None = None) -> FastAPI:
    """The service app. `backend`: an already built LLM backend (owned by the caller, not closed here);
    None builds the one named by settings.llm_backend. Raises StartupError for a bad bundle."""
    manifest = verify(settings.bundle)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            app.state.service = await build_service(settings, manifest, metrics, backend, stack)
            app.state.genre_service = build_genre_service(
                app.state.service,
                settings.batch_window_ms / 1000.0,
                settings.max_batch_size,
                stack,
                settings.llm_shed_budget_s,
            )
            log.info("serving bundle %s", manifest.bundle_version)
            yield
            app.state.service = app.state.genre_service = None

    app = FastAPI(
        title="llmrec",
        version=__version__,
        summary="Sequential recommendations: LLM-SRec user vectors or A-LLMRec re-ranking (SASRec fallback).",
        lifespan=lifespan,
    )
    app.state.settings, app.state.metrics, app.state.service = settings, metrics, None
    app.state.genre_service = None
    install_error_handlers(app)
    routers = [module.router for module in (recommend, users, items, ops, explain, page)]
    for router in routers:
        app.include_router(router)
    # the app's own routes (docs, schema) and ours with their full paths: the metrics' route labels
    routes = [*app.router.routes, *(route for router in routers for route in router.routes)]
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, routes=routes)  # added last: outermost
    install_openapi(app, settings, manifest)
    return app


async def build_service(
    settings: Settings,
    manifest: Manifest,
    metrics: Metrics,
    backend: LLMBackend | None,
    stack: AsyncExitStack,
) -> RecommendService:
    """Everything heavy, each registered on `stack` right after it is built (so it closes in reverse)."""
    device = settings.resolved_device()
    bundle = await asyncio.to_thread(load_bundle, settings.bundle, manifest, device)
    store = create_store(
        settings.redis_url,
        settings.redis_prefix,
        timeout_s=settings.redis_timeout_s,
        retry_after_s=settings.redis_retry_after_s,
        max_connections=settings.redis_max_connections,
        ttl_s=settings.cache_ttl_s,
        history_ttl_s=settings.history_ttl_s,
        max_entries=settings.cache_max_entries,
        l1_max_entries=settings.l1_cache_max_entries,
        l1_ttl_s=settings.l1_cache_ttl_s,
        cluster=settings.redis_cluster,
        on_error=metrics.store_error,
        on_lookup=metrics.cache_lookup,
    )
    stack.push_async_callback(store.close)
    if settings.redis_url and not await store.ping():
        where = urlsplit(settings.redis_url)
        log.warning(
            "Redis at %s:%s is unreachable; serving without it until it answers", where.hostname, where.port
        )
    batcher, allmrec = None, None
    if bundle.heads is not None:
        backend = backend or await _own_backend(settings, bundle, device, stack)
        batcher = _batcher(backend, settings, metrics)
        stack.push_async_callback(batcher.close)
        if bundle.allmrec is not None:
            allmrec = _allmrec_reranker(bundle, store, backend, settings, metrics, stack)
    rankers = _rankers(bundle, settings, device)
    return RecommendService(
        bundle=bundle,
        store=store,
        backend=backend if bundle.heads is not None else None,
        batcher=batcher,
        rankers=rankers,
        popularity=PopularityRanker(bundle.popularity, device),
        candidates=CandidateFilter(
            bundle.catalog.n_items, bundle.catalog.genres, bundle.catalog.genre_matrix(), device
        ),
        metrics=metrics,
        limits=PipelineLimits(
            settings.llm_timeout_s, settings.max_history, settings.max_events, settings.redis_prefix
        ),
        allmrec=allmrec,
        default_model=settings.default_model,
    )


async def _own_backend(
    settings: Settings, bundle: ServingBundle, device: str, stack: AsyncExitStack
) -> LLMBackend:
    backend = await asyncio.to_thread(
        create_backend,
        settings.llm_backend,
        bundle,
        device=device,
        dtype=settings.llm_dtype,
        llm_path=settings.llm_path,
        options=_backend_options(settings),
    )
    stack.callback(backend.close)
    return backend


def _backend_options(settings: Settings) -> dict[str, Any]:
    """Settings only one backend reads, passed as its keyword options."""
    if settings.llm_backend == "vllm":
        return {
            "gpu_memory_utilization": settings.vllm_gpu_memory_utilization,
            "max_model_len": settings.vllm_max_model_len,
            "hf_scoring": settings.vllm_hf_scoring,
            "generate_url": settings.vllm_generate_url,
            "generate_model": settings.vllm_generate_model,
        }
    return {}


def _batcher(backend: LLMBackend, settings: Settings, metrics: Metrics) -> MicroBatcher:
    def encode(jobs: Sequence[EncodeJob]) -> np.ndarray:
        return backend.encode_users([j.items for j in jobs], [j.timestamps for j in jobs])

    batcher = MicroBatcher(
        encode,
        settings.batch_window_ms / 1000.0,
        settings.max_batch_size,
        on_batch=metrics.llm_batch,
        shed_budget_s=settings.llm_shed_budget_s,
    )
    batcher.start()
    return batcher


def _allmrec_reranker(
    bundle: ServingBundle,
    store: Store,
    backend: LLMBackend,
    settings: Settings,
    metrics: Metrics,
    stack: AsyncExitStack,
) -> ALLMRecReranker:
    """model=allmrec: its own micro-batcher (closed by `stack`) over the backend's candidate scoring."""
    assert bundle.allmrec is not None
    width = settings.allmrec_candidates
    batcher = MicroBatcher(
        rank_batch_fn(backend, width),
        settings.batch_window_ms / 1000.0,
        settings.max_batch_size,
        on_batch=metrics.llm_batch,
        shed_budget_s=settings.llm_shed_budget_s,
    )
    batcher.start()
    stack.push_async_callback(batcher.close)
    config = RerankConfig(
        bundle_version=bundle.version,
        history_window=max(bundle.sasrec.config.max_len, bundle.allmrec.prompt.history_len),
        template_version=bundle.allmrec.prompt.version,
        n_candidates=width,
        timeout_s=settings.llm_timeout_s,
        key_prefix=settings.redis_prefix,
    )
    return ALLMRecReranker(store, batcher, metrics, config)


def _rankers(bundle: ServingBundle, settings: Settings, device: str) -> dict[str, Ranker]:
    """One ranker per item table: LLM-SRec item vectors, SASRec item embeddings (the fallback) and, for the
    hybrid, both side by side."""
    tables = {"sasrec": bundle.sasrec.item_embeddings().detach().float().cpu().numpy()}
    if bundle.item_vectors is not None:
        tables["llmsrec"] = bundle.item_vectors
        if bundle.hybrid is not None:
            tables["hybrid"] = hybrid_item_table(bundle.item_vectors, tables["sasrec"])
    return {
        name: Ranker(table, device, settings.index_exact_max_items, settings.retrieval_top_n)
        for name, table in tables.items()
    }
