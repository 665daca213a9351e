"""/v1/recommend as named stages over app.domain values: validate (the model, before any I/O) → history
(body or store) → candidates (filters, seen items) → encode (the model's user vector: app.encoding) →
retrieve + rank (FAISS, exact rescoring: app.retrieval) → re-rank (app.rerank: identity, or A-LLMRec's) →
respond. Also what the other routes ask of the loaded bundle: stored histories, catalog look-ups, the models
served and readiness. Framework-free: no HTTP, no pydantic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from torch import Tensor

from app.backends.base import LLMBackend
from app.bundle import ServingBundle
from app.cache import Store
from app.domain import (
    AppendResult,
    CatalogItem,
    Event,
    RankedItem,
    Recommendation,
    RecommendQuery,
)
from app.encoding import UserEncoder, UserEncoding, UserVector
from app.errors import InvalidRequestError, NotFoundError
from app.history import Histories, History
from app.metrics import Metrics, elapsed_ms
from app.rerank import IdentityReranker, Ranking, Reranker
from app.retrieval import CandidateFilter, PopularityRanker, Ranker
from app.search import TitleSearch
from app.serving_models import DefaultModel, ModelInfo, describe_models, resolve_default

POPULARITY_FALLBACK = "ranked by popularity"  # what answers when the stored history is unavailable


@dataclass(frozen=True)
class ModelPlan:
    """How one model answers: whose user vector ranks the catalogue, and what re-ranks its best items."""

    user_vector: UserVector
    reranker: Reranker


def model_plans(encoder: UserEncoder, allmrec: Reranker | None) -> dict[str, ModelPlan]:
    """The models this service can serve (those the bundle has, with the LLM backend where they need it),
    in the order GET /v1/models and the schema list them."""
    identity = IdentityReranker()
    plans: dict[str, ModelPlan] = {kind: ModelPlan(kind, identity) for kind in encoder.kinds}
    if allmrec is not None:
        plans["allmrec"] = ModelPlan("sasrec", allmrec)  # re-ranks SASRec's candidates
    return plans


class RecommendService:
    def __init__(
        self,
        bundle: ServingBundle,
        histories: Histories,
        encoder: UserEncoder,
        rankers: Mapping[str, Ranker],
        popularity: PopularityRanker,
        candidates: CandidateFilter,
        metrics: Metrics,
        *,
        store: Store,
        backend: LLMBackend | None,
        allmrec: Reranker | None = None,
        default_model: str = "auto",
    ) -> None:
        """rankers: one per user vector (UserVector); store and backend: for readiness only; default_model:
        settings.default_model ('auto' or a model), StartupError if it cannot be served."""
        self.bundle, self.histories, self.encoder, self.rankers = bundle, histories, encoder, rankers
        self.popularity, self.candidate_filter, self.metrics = popularity, candidates, metrics
        self.store, self.backend = store, backend
        self.plans = model_plans(encoder, allmrec)
        self.servable = tuple(self.plans)
        self.default: DefaultModel = resolve_default(bundle.manifest, self.servable, default_model)
        self.titles = TitleSearch(bundle.catalog.items, bundle.popularity)

    async def recommend(self, q: RecommendQuery) -> Recommendation:
        start = time.perf_counter()
        plan, n = self._validate(q)
        history = await self.histories.resolve(q.user_id, q.history, POPULARITY_FALLBACK)
        allowed, n_blocked, cold = self._candidates(q, history)
        if not history.known:  # nothing to encode: the most popular allowed items answer
            return self._respond(self._popular(allowed, q.k), history, start)
        encoding = await self.encoder.encode(plan.user_vector, history.known)
        ranking = await self._rank(encoding, allowed, n, n_blocked)
        ranking = await plan.reranker.rerank(history.known_ids, ranking, q.k, cold, encoding.vector)
        return self._respond(ranking, history, start)

    def _validate(self, q: RecommendQuery) -> tuple[ModelPlan, int]:
        """The plan of the model asked for (else the default) and how many items its ranker returns; 422 for a
        model this service cannot serve or a k its reranker cannot answer."""
        model = q.model or self.default.name
        plan = self.plans.get(model)
        if plan is None:
            raise InvalidRequestError(
                f"model {model!r} is not in bundle {self.bundle.version} "
                f"(models: {', '.join(self.bundle.manifest.models)})"
            )
        return plan, plan.reranker.candidates(q.k)

    def _candidates(self, q: RecommendQuery, history: History) -> tuple[Tensor, int, list[int]]:
        """The items the caller's filters allow, minus the history's when exclude_seen: (mask of warm items,
        n_blocked, the allowed cold items: only A-LLMRec's text path may add them)."""
        seen = [e.item_id for e in history.events] if q.exclude_seen else []
        allowed, n_blocked = self.candidate_filter.allowed(q.filters, seen)
        wants_cold = (q.model or self.default.name) == "allmrec"
        cold = self.candidate_filter.allowed_cold(q.filters, seen) if wants_cold else []
        return allowed, n_blocked, cold

    def _popular(self, allowed: Tensor, k: int) -> Ranking:
        """An empty (or all-unknown) history: the most popular allowed items."""
        start = time.perf_counter()
        items = self.popularity.rank(allowed, k)
        return Ranking(items, "popularity", timing_ms={"rank": elapsed_ms(start)})

    async def _rank(self, encoding: UserEncoding, allowed: Tensor, n: int, n_blocked: int) -> Ranking:
        """Retrieve + rank: the best n allowed items for the user vector (FAISS, then exact rescoring)."""
        start = time.perf_counter()
        ranker = self.rankers[encoding.strategy]
        items = await asyncio.to_thread(ranker.rank, encoding.vector, allowed, n, n_blocked)
        timing = {**encoding.timing_ms, "rank": elapsed_ms(start)}
        return Ranking(items, encoding.strategy, encoding.cache_hit, encoding.degraded_reason, timing)

    def _respond(self, ranking: Ranking, history: History, start: float) -> Recommendation:
        self.metrics.recommendations.labels(ranking.strategy).inc()
        titles = self.bundle.catalog.items
        return Recommendation(
            items=[RankedItem(i, titles[i - 1].title, s) for i, s in ranking.items],
            strategy=ranking.strategy,
            meta=history.response_meta(
                self.bundle.version,
                ranking.cache_hit,
                ranking.degraded_reason,
                ranking.timing_ms,
                elapsed_ms(start),
            ),
        )

    async def append_events(self, user_id: str, events: Sequence[Event]) -> AppendResult:
        return await self.histories.append(user_id, events)

    async def history(self, user_id: str) -> list[Event]:
        return await self.histories.read(user_id)

    def item(self, item_id: int) -> CatalogItem:
        item = self.bundle.catalog.get(item_id)
        if item is None:
            raise NotFoundError(
                f"item {item_id} is not in bundle {self.bundle.version} (1..{self.bundle.catalog.n_items})"
            )
        return item

    async def search_items(self, query: str, limit: int) -> tuple[int, list[CatalogItem]]:
        """(matches, the best `limit`) of a title search (app.search); off the loop for large catalogues."""
        return await asyncio.to_thread(self.titles.find, query, limit)

    def models(self) -> list[ModelInfo]:
        """The bundle's models with their validation metrics, which one is the default, which serve now."""
        healthy = self.backend is None or self.backend.health()
        return describe_models(self.bundle.manifest, self.servable, healthy, self.default)

    async def readiness(self) -> tuple[bool, dict[str, str]]:
        """(ready, {dependency: 'ok', 'degraded: ...' or the problem}); a SASRec-only bundle needs no LLM.
        A Redis outage is 'degraded', still ready: every replica shares that Redis, so failing readiness would
        take them all out of service, while each can still answer (from its L1 cache, SASRec, popularity)."""
        checks = {"bundle": f"ok ({self.bundle.version})"}
        checks["store"] = await self.store.check()
        if self.backend is None:
            checks["llm"] = "ok (none: SASRec-only bundle)"
        else:
            checks["llm"] = "ok" if self.backend.health() else "unhealthy (last forward failed)"
        return all(v.startswith(("ok", "degraded")) for v in checks.values()), checks
