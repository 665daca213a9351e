"""The recommend pipeline as named stages over app.domain values: resolve history → split known items →
candidate mask → user vector (cache, micro-batched LLM, SASRec fallback; the hybrid joins LLM-SRec's and
SASRec's) → retrieve + rank (→ A-LLMRec re-rank of SASRec's candidates for model=allmrec) → respond.
Also stored histories and catalog look-ups. Framework-free: no HTTP, no pydantic."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from app.allmrec import ALLMRecReranker
from app.backends.base import LLMBackend
from app.batcher import EncodeJob, MicroBatcher
from app.bundle import ServingBundle
from app.cache import Store, vector_key
from app.domain import (
    AppendResult,
    CatalogItem,
    Event,
    HistorySource,
    RankedItem,
    Recommendation,
    RecommendQuery,
    Strategy,
)
from app.errors import (
    BackendError,
    InvalidRequestError,
    LoadShedError,
    NotFoundError,
    StoreUnavailableError,
)
from app.metrics import Metrics, elapsed_ms
from app.retrieval import CandidateFilter, PopularityRanker, Ranker
from app.search import TitleSearch
from app.serving_models import DefaultModel, ModelInfo, describe_models, resolve_default
from models.hybrid import hybrid_user_vectors
from models.prompts import cut_history

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineLimits:
    llm_timeout_s: float
    max_history: int
    max_events: int
    key_prefix: str


@dataclass
class UserEncoding:
    """How the user is represented: the strategy that will rank, its vector, and what happened on the way."""

    strategy: Strategy
    vector: np.ndarray | None
    cache_hit: bool = False
    degraded_reason: str | None = None


async def resolve_history(
    store: Store,
    limits: PipelineLimits,
    metrics: Metrics,
    user_id: str | None,
    history: Sequence[Event] | None,
    outage_fallback: str,
) -> tuple[list[Event], HistorySource, str | None]:
    """The body's history (within max_history), else the user's stored one; a store outage degrades to an
    empty history, with a reason that ends in `outage_fallback` (what answers instead)."""
    if history is not None:
        if len(history) > limits.max_history:
            raise InvalidRequestError(
                f"history has {len(history)} events; the limit is {limits.max_history} (max_history)"
            )
        return list(history), "body", None
    assert user_id is not None  # the request schemas require one of the two
    try:
        stored = await store.get_history(user_id)
    except StoreUnavailableError as err:
        metrics.fallbacks.labels("history_unavailable").inc()
        return [], "none", f"stored history unavailable ({err.message}); {outage_fallback}"
    return stored, "stored" if stored else "none", None


class RecommendService:
    def __init__(
        self,
        bundle: ServingBundle,
        store: Store,
        backend: LLMBackend | None,
        batcher: MicroBatcher | None,
        rankers: dict[str, Ranker],
        popularity: PopularityRanker,
        candidates: CandidateFilter,
        metrics: Metrics,
        limits: PipelineLimits,
        allmrec: ALLMRecReranker | None = None,
        default_model: str = "auto",
    ) -> None:
        """default_model: settings.default_model ('auto' or a model); StartupError if it cannot be served."""
        self.bundle, self.store, self.backend, self.batcher = bundle, store, backend, batcher
        self.rankers, self.allmrec = rankers, allmrec
        self.popularity, self.candidates, self.metrics, self.limits = popularity, candidates, metrics, limits
        llm = batcher is not None  # LLM-SRec and the hybrid need the backend's user vectors
        served = {
            "sasrec": True,
            "llmsrec": llm and "llmsrec" in rankers,
            "hybrid": llm and "hybrid" in rankers and bundle.hybrid is not None,
            "allmrec": allmrec is not None,
        }
        self.servable = tuple(name for name, ok in served.items() if ok)
        self.default: DefaultModel = resolve_default(bundle.manifest, self.servable, default_model)
        self.titles = TitleSearch(bundle.catalog.items, bundle.popularity)

    async def recommend(self, q: RecommendQuery) -> Recommendation:
        start, timing = time.perf_counter(), dict[str, float]()
        history, source, store_problem = await self._resolve_history(q)
        known, unknown = self._split_known(history)
        seen = [e.item_id for e in history] if q.exclude_seen else []
        allowed, n_blocked = self.candidates.allowed(q.filters, seen)
        model = q.model or self.default.name
        encoding = await self._encode(known, model, q.k, timing)
        t = time.perf_counter()
        if encoding.vector is None:
            ranked = self.popularity.rank(allowed, q.k)
        else:
            ranker, vector = self.rankers[encoding.strategy], encoding.vector
            n = self.allmrec.config.n_candidates if model == "allmrec" and self.allmrec else q.k
            ranked = await asyncio.to_thread(ranker.rank, vector, allowed, n, n_blocked)
        timing["rank"] = elapsed_ms(t)
        if model == "allmrec" and self.allmrec is not None and encoding.vector is not None:
            t = time.perf_counter()
            reranked = await self.allmrec.rerank([e.item_id for e in known], ranked, q.k, timing)
            timing["rerank"] = elapsed_ms(t)
            ranked = reranked.items
            encoding = UserEncoding(reranked.strategy, None, reranked.cache_hit, reranked.degraded_reason)
        timing["total"] = elapsed_ms(start)
        self.metrics.recommendations.labels(encoding.strategy).inc()
        reason = encoding.degraded_reason or store_problem
        return Recommendation(
            items=[RankedItem(i, self.bundle.catalog.items[i - 1].title, s) for i, s in ranked],
            bundle_version=self.bundle.version,
            strategy=encoding.strategy,
            cache_hit=encoding.cache_hit,
            degraded=reason is not None,
            degraded_reason=reason,
            unknown_items=unknown,
            history_length=len(known),
            history_source=source,
            timing_ms=timing,
        )

    async def _resolve_history(self, q: RecommendQuery) -> tuple[list[Event], HistorySource, str | None]:
        return await resolve_history(
            self.store, self.limits, self.metrics, q.user_id, q.history, "ranked by popularity"
        )

    def _split_known(self, history: Sequence[Event]) -> tuple[list[Event], list[int]]:
        """Items of the bundle's catalog (in order) and the sorted distinct unknown ids (skipped)."""
        known = [e for e in history if self.bundle.catalog.get(e.item_id) is not None]
        unknown = sorted({e.item_id for e in history} - {e.item_id for e in known})
        return known, unknown

    async def _encode(self, known: list[Event], model: str, k: int, timing: dict[str, float]) -> UserEncoding:
        """Popularity for an empty history; LLM-SRec's vector (cache → micro-batched LLM) for llmsrec and the
        hybrid, which concatenates it with SASRec's (models.hybrid); SASRec's alone for sasrec, for
        model=allmrec (its candidates), or as the degraded fallback of a failed LLM."""
        self._check_model(model, k)
        if not known:
            return UserEncoding("popularity", None)
        encoding = UserEncoding("sasrec", None)
        if model in ("llmsrec", "hybrid"):
            encoding = await self._llm_vector(known, timing)
        if encoding.vector is not None and model != "hybrid":
            return encoding
        t = time.perf_counter()
        sasrec = await asyncio.to_thread(self._sasrec_vector, [e.item_id for e in known])
        timing["sasrec"] = elapsed_ms(t)
        if encoding.vector is None:  # sasrec or allmrec asked, or the LLM failed (degraded)
            encoding.vector = sasrec
            return encoding
        assert self.bundle.hybrid is not None  # _check_model: served only with its part
        user = hybrid_user_vectors(encoding.vector[None], sasrec[None], self.bundle.hybrid)[0]  # (D_u+D_cf,)
        return UserEncoding("hybrid", user, encoding.cache_hit)

    def _check_model(self, model: str, k: int) -> None:
        """A model this service can serve (the bundle's, with the LLM backend where it needs one); for
        allmrec, k within its candidates."""
        if model not in self.servable:
            models = ", ".join(self.bundle.manifest.models)
            raise InvalidRequestError(
                f"model {model!r} is not in bundle {self.bundle.version} (models: {models})"
            )
        if model == "allmrec" and self.allmrec is not None and k > self.allmrec.config.n_candidates:
            n = self.allmrec.config.n_candidates
            raise InvalidRequestError(
                f"k={k} exceeds the {n} SASRec candidates A-LLMRec re-ranks (allmrec_candidates)"
            )

    async def _llm_vector(self, known: list[Event], timing: dict[str, float]) -> UserEncoding:
        assert self.batcher is not None and self.bundle.prompt is not None
        prompt = self.bundle.prompt
        window = known[-prompt.history_len :]
        items = tuple(e.item_id for e in window)
        stamps = (
            None
            if any(e.timestamp is None for e in window)
            else tuple(float(e.timestamp or 0) for e in window)
        )
        shown, dates = cut_history(items, stamps, prompt.history_len)  # exactly what the prompt shows
        dates = dates if prompt.shows_dates else None  # the short template prints no dates
        key = vector_key(self.limits.key_prefix, self.bundle.version, shown, dates, prompt.version)
        t = time.perf_counter()
        cached = await self.store.get_vector(key)
        timing["cache"] = elapsed_ms(t)
        if cached is not None and cached.shape == self.rankers["llmsrec"].table.shape[1:]:
            return UserEncoding("llmsrec", cached, cache_hit=True)  # the store counted the lookup
        t = time.perf_counter()
        try:
            vector = await asyncio.wait_for(
                self.batcher.submit(key, EncodeJob(items, stamps)), self.limits.llm_timeout_s
            )
        except TimeoutError:
            self.metrics.fallbacks.labels("llm_timeout").inc()
            return UserEncoding(
                "sasrec", None, degraded_reason=f"LLM timed out after {self.limits.llm_timeout_s:g} s"
            )
        except LoadShedError as err:
            self.metrics.fallbacks.labels("llm_shed").inc()
            return UserEncoding("sasrec", None, degraded_reason=str(err))
        except BackendError as err:
            self.metrics.fallbacks.labels("llm_error").inc()
            return UserEncoding("sasrec", None, degraded_reason=str(err))
        finally:
            timing["llm"] = elapsed_ms(t)
        await self.store.set_vector(key, vector)
        return UserEncoding("llmsrec", vector)

    def _sasrec_vector(self, items: Sequence[int]) -> np.ndarray:
        """SASRec user vector of the last max_len items (no padding needed for one sequence)."""
        model = self.bundle.sasrec
        seq = torch.tensor(
            [list(items)[-model.config.max_len :]], dtype=torch.long, device=model.item_emb.weight.device
        )
        with torch.inference_mode():
            return model.user_vector(seq)[0].float().cpu().numpy()  # (d_cf,)

    async def append_events(self, user_id: str, events: Sequence[Event]) -> AppendResult:
        """Idempotent on (item, timestamp); the stored history keeps the newest `bundle.window` events."""
        if len(events) > self.limits.max_events:
            raise InvalidRequestError(
                f"{len(events)} events in one request; the limit is {self.limits.max_events} (max_events)"
            )
        added, length = await self.store.append_events(user_id, events, self.bundle.window)
        unknown = sorted({e.item_id for e in events if self.bundle.catalog.get(e.item_id) is None})
        return AppendResult(added, length, unknown)

    async def history(self, user_id: str) -> list[Event]:
        return await self.store.get_history(user_id)

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
