"""`create_app(settings)`: verify the bundle (refuse a bad one at once), then in the lifespan build the heavy
parts — bundle weights, store, LLM backend, the LLM stages (each with its micro-batcher), rankers — and close
them in reverse order."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI

from app.allmrec import CANDIDATE_SCORES, ALLMRecReranker, RerankConfig, candidate_scores_fn
from app.backends.base import LLMBackend, create_backend
from app.batcher import BatchFn
from app.bundle import ServingBundle, load_bundle, verify
from app.cache import Store
from app.encoding import USER_VECTORS, UserEncoder, UserJob, user_vectors_fn
from app.error_handlers import install_error_handlers
from app.genre import GENRE_ANSWERS, GenreAnswer, GenreJob, GenreService, genre_answers_fn
from app.history import Histories
from app.llm_stage import LLMStage, StageSpec
from app.metrics import Metrics
from app.middleware import BodyLimitMiddleware, RequestContextMiddleware
from app.openapi import install_openapi
from app.pipeline import RecommendService
from app.retrieval import CandidateFilter, PopularityRanker, Ranker
from app.routes import explain, items, ops, page, recommend, users
from app.settings import Settings
from app.tiered_cache import create_store
from models.bundle import Manifest
from models.hybrid import hybrid_item_table

log = logging.getLogger(__name__)
__version__ = "0.1.0"
Job = TypeVar("Job")
Result = TypeVar("Result")


def create_app(settings: Settings, *, backend: LLMBackend | None = None) -> FastAPI:
    """The service app. `backend`: an already built LLM backend (owned by the caller, not closed here);
    None builds the one named by settings.llm_backend. Raises StartupError for a bad bundle."""
    manifest = verify(settings.bundle)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            services = await build_services(settings, manifest, metrics, backend, stack)
            app.state.service, app.state.genre_service = services
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
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.limits.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, routes=routes)  # added last: outermost
    install_openapi(app, settings, manifest)
    return app


async def build_services(
    settings: Settings,
    manifest: Manifest,
    metrics: Metrics,
    backend: LLMBackend | None,
    stack: AsyncExitStack,
) -> tuple[RecommendService, GenreService]:
    """Everything heavy, each registered on `stack` right after it is built (so it closes in reverse)."""
    device = settings.resolved_device()
    bundle = await asyncio.to_thread(load_bundle, settings.bundle, manifest, device)
    store = await _open_store(settings, metrics, stack)
    if bundle.heads is None:  # a SASRec-only bundle needs no LLM
        backend = None
    elif backend is None:
        backend = await _own_backend(settings, bundle, device, stack)
    llm = _llm_parts(backend, bundle, store, metrics, settings, stack)
    histories = Histories(store, bundle.catalog, settings.limits, metrics, bundle.window)
    service = RecommendService(
        bundle,
        histories,
        UserEncoder(bundle, llm.user),
        _rankers(bundle, settings, device),
        PopularityRanker(bundle.popularity, device),
        CandidateFilter(
            bundle.catalog.n_items,
            bundle.catalog.genres,
            bundle.catalog.genre_matrix(),
            device,
            cold=bundle.catalog.cold_mask(),
        ),
        metrics,
        store=store,
        backend=backend,
        allmrec=llm.allmrec,
        default_model=settings.default_model,
    )
    return service, GenreService(bundle, histories, llm.genre)


@dataclass(frozen=True)
class LLMParts:
    """What the service asks of the LLM, each an LLM stage: LLM-SRec's user vectors, A-LLMRec's re-ranking
    and its genre answers (None: not served)."""

    user: LLMStage[UserJob, np.ndarray] | None = None
    allmrec: ALLMRecReranker | None = None
    genre: LLMStage[GenreJob, GenreAnswer] | None = None


def _llm_parts(
    backend: LLMBackend | None,
    bundle: ServingBundle,
    store: Store,
    metrics: Metrics,
    settings: Settings,
    stack: AsyncExitStack,
) -> LLMParts:
    """The LLM stages over `backend` (each started, and closed by `stack`); A-LLMRec's only with its part."""
    if backend is None:
        return LLMParts()

    def stage(spec: StageSpec[Result], fn: BatchFn[Job, Result]) -> LLMStage[Job, Result]:
        built = LLMStage(
            spec,
            fn,
            store,
            metrics,
            settings.llm_stage,
            key_prefix=settings.redis.prefix,
            bundle_version=bundle.version,
        )
        built.start()
        stack.push_async_callback(built.close)
        return built

    user = stage(USER_VECTORS, user_vectors_fn(backend))
    allmrec = None
    if bundle.allmrec is not None:
        part = bundle.allmrec
        # stage 1's text-predicted CF table: read only when the scoring scores cold candidates from text
        imputed = (
            None if part.scoring.cold_offset is None else part.stage1.imputed_table().double().cpu().numpy()
        )
        allmrec = ALLMRecReranker(
            stage(CANDIDATE_SCORES, candidate_scores_fn(backend)),
            _rerank_config(bundle, settings),
            text_emb=part.stage1.text_emb,
            imputed=imputed,
        )
    genre = stage(GENRE_ANSWERS, genre_answers_fn(backend)) if bundle.genre is not None else None
    return LLMParts(user, allmrec, genre)


async def _open_store(settings: Settings, metrics: Metrics, stack: AsyncExitStack) -> Store:
    """Redis behind the in-process L1 (or the in-process store alone); an unreachable Redis is a warning."""
    store = create_store(settings.redis, settings.cache, metrics.store_error, metrics.cache_lookup)
    stack.push_async_callback(store.close)
    if settings.redis.url and not await store.ping():
        where = urlsplit(settings.redis.url)
        log.warning(
            "Redis at %s:%s is unreachable; serving without it until it answers", where.hostname, where.port
        )
    return store


async def _own_backend(
    settings: Settings, bundle: ServingBundle, device: str, stack: AsyncExitStack
) -> LLMBackend:
    options: dict[str, Any] = {}  # settings only one backend reads, passed as its keyword options
    if settings.llm_backend == "vllm":
        options = dataclasses.asdict(settings.vllm)
    backend = await asyncio.to_thread(
        create_backend,
        settings.llm_backend,
        bundle,
        device=device,
        dtype=settings.llm_dtype,
        llm_path=settings.llm_path,
        options=options,
    )
    stack.callback(backend.close)
    return backend


def _rerank_config(bundle: ServingBundle, settings: Settings) -> RerankConfig:
    assert bundle.allmrec is not None
    return RerankConfig(
        template_version=bundle.allmrec.prompt.version,
        n_candidates=settings.allmrec_candidates,
        history_window=max(bundle.sasrec.config.max_len, bundle.allmrec.prompt.history_len),
        scoring=bundle.allmrec.scoring,
        cold_candidates=settings.allmrec_cold_candidates,
    )


def _rankers(bundle: ServingBundle, settings: Settings, device: str) -> dict[str, Ranker]:
    """One ranker per user vector: LLM-SRec item vectors, SASRec item embeddings (the fallback) and, for the
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
