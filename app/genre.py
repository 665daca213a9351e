"""The favourite-genre pipeline behind /v1/explain/genre: resolve history → split known items → cache →
micro-batched A-LLMRec genre prompt (ranked genres + one generated sentence); the history's genre counts
(degraded) when the LLM fails, times out or the bundle has no genre model; genre popularity for an empty
history. Framework-free: no HTTP, no pydantic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.backends.base import LLMBackend
from app.batcher import EncodeJob, MicroBatcher
from app.bundle import ServingBundle
from app.cache import Store, vector_key
from app.domain import Event, HistorySource
from app.errors import BackendError, InvalidRequestError, LoadShedError
from app.metrics import Metrics, elapsed_ms
from app.pipeline import PipelineLimits, RecommendService, resolve_history

GenreSource = Literal["allmrec", "history_counts", "popularity"]
# Scores and the sentence travel as one float32 row (scores, byte count, UTF-8 bytes), so the shared
# micro-batcher and the vector cache carry them unchanged.
EXPLANATION_BYTES = 1024


@dataclass(frozen=True)
class GenreQuery:
    user_id: str | None
    history: tuple[Event, ...] | None  # None → the user's stored history
    top_n: int = 3


@dataclass(frozen=True)
class RankedGenre:
    name: str
    score: float


@dataclass
class GenreExplanation:
    genres: list[RankedGenre]
    explanation: str
    source: GenreSource
    bundle_version: str
    cache_hit: bool
    degraded: bool
    degraded_reason: str | None
    unknown_items: list[int]
    history_length: int
    history_source: HistorySource
    timing_ms: dict[str, float]


def pack_result(scores: np.ndarray, text: str) -> np.ndarray:
    """(G + 1 + EXPLANATION_BYTES,) float32: scores, the sentence's byte count, its UTF-8 bytes (cut)."""
    raw = text.encode("utf-8")[:EXPLANATION_BYTES]
    row = np.zeros(len(scores) + 1 + EXPLANATION_BYTES, dtype=np.float32)
    row[: len(scores)] = scores
    row[len(scores)] = len(raw)
    row[len(scores) + 1 : len(scores) + 1 + len(raw)] = np.frombuffer(raw, dtype=np.uint8)
    return row


def unpack_result(row: np.ndarray, n_genres: int) -> tuple[np.ndarray, str]:
    n = int(row[n_genres])
    raw = row[n_genres + 1 : n_genres + 1 + n].astype(np.uint8).tobytes()
    return row[:n_genres].astype(np.float64), raw.decode("utf-8", errors="ignore")


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


def genre_batch_fn(backend: LLMBackend) -> Callable[[Sequence[EncodeJob]], np.ndarray]:
    """The micro-batcher's blocking function: one backend call for the whole batch, packed rows out."""

    def run(jobs: Sequence[EncodeJob]) -> np.ndarray:
        scores, texts = backend.explain_genres([list(j.items) for j in jobs])
        return np.stack([pack_result(s, t) for s, t in zip(scores, texts, strict=True)])

    return run


def build_genre_service(
    service: RecommendService,
    window_s: float,
    max_batch_size: int,
    stack: AsyncExitStack,
    shed_budget_s: float = 0.0,
) -> GenreService:
    """The genre service next to the recommend one (same bundle, store, backend, limits); its own
    micro-batcher (closed by `stack`) when the bundle has a genre model and an LLM backend runs."""
    batcher = None
    if service.bundle.genre is not None and service.backend is not None:
        batcher = MicroBatcher(
            genre_batch_fn(service.backend),
            window_s,
            max_batch_size,
            on_batch=service.metrics.llm_batch,
            shed_budget_s=shed_budget_s,
        )
        batcher.start()
        stack.push_async_callback(batcher.close)
    return GenreService(service.bundle, service.store, batcher, service.metrics, service.limits)


class GenreService:
    def __init__(
        self,
        bundle: ServingBundle,
        store: Store,
        batcher: MicroBatcher | None,
        metrics: Metrics,
        limits: PipelineLimits,
    ) -> None:
        self.bundle, self.store, self.batcher = bundle, store, batcher
        self.metrics, self.limits = metrics, limits
        self.genres = bundle.genre.genres if bundle.genre is not None else bundle.catalog.genres
        index = {g: j for j, g in enumerate(self.genres)}
        self.matrix = np.zeros((bundle.catalog.n_items + 1, len(self.genres)), dtype=np.float64)  # (n+1, G)
        for item in bundle.catalog.items:
            self.matrix[item.item_id, [index[g] for g in item.genres if g in index]] = 1.0
        popular = bundle.popularity.astype(np.float64) @ self.matrix  # (G,)
        self.popular = popular / max(popular.sum(), 1.0)

    async def explain(self, q: GenreQuery) -> GenreExplanation:
        start, timing = time.perf_counter(), dict[str, float]()
        if not self.genres:
            raise InvalidRequestError(f"bundle {self.bundle.version} has no genre vocabulary")
        if q.top_n < 1:
            raise InvalidRequestError("top_n must be >= 1")
        history, source, problem = await resolve_history(
            self.store, self.limits, self.metrics, q.user_id, q.history, "genres by popularity"
        )
        known = [e.item_id for e in history if self.bundle.catalog.get(e.item_id) is not None]
        unknown = sorted({e.item_id for e in history} - set(known))
        scores, text, how, hit, reason = await self._scores(known, timing)
        reason = reason or problem
        order = np.argsort(-scores, kind="stable")[: q.top_n]
        timing["total"] = elapsed_ms(start)
        return GenreExplanation(
            genres=[RankedGenre(self.genres[g], round(float(scores[g]), 6)) for g in order],
            explanation=text,
            source=how,
            bundle_version=self.bundle.version,
            cache_hit=hit,
            degraded=reason is not None,
            degraded_reason=reason,
            unknown_items=unknown,
            history_length=len(known),
            history_source=source,
            timing_ms=timing,
        )

    async def _scores(
        self, known: list[int], timing: dict[str, float]
    ) -> tuple[np.ndarray, str, GenreSource, bool, str | None]:
        """(scores (G,), sentence, source, cache hit, degraded reason)."""
        if not known:
            return (
                self.popular,
                "No known history: the most popular genres overall.",
                "popularity",
                False,
                None,
            )
        if self.batcher is None or self.bundle.genre is None:
            reason = f"bundle {self.bundle.version} has no A-LLMRec genre model; genre counts of the history"
            return (*self._counts(known), "history_counts", False, reason)
        window = tuple(known[-self.bundle.genre.prompt.history_len :])
        version = f"{self.bundle.genre.template_version}:genre"
        key = vector_key(self.limits.key_prefix, self.bundle.version, window, None, version)
        t = time.perf_counter()
        row = await self.store.get_vector(key)
        timing["cache"] = elapsed_ms(t)
        hit = row is not None and row.shape == (len(self.genres) + 1 + EXPLANATION_BYTES,)
        if row is None or not hit:  # the store counted the lookup
            row, failure = await self._run_llm(key, window, timing)
            if row is None:
                return (*self._counts(known), "history_counts", False, failure)
            await self.store.set_vector(key, row)
        scores, text = unpack_result(row, len(self.genres))
        return softmax(scores), text, "allmrec", hit, None

    async def _run_llm(
        self, key: str, window: tuple[int, ...], timing: dict[str, float]
    ) -> tuple[np.ndarray | None, str | None]:
        assert self.batcher is not None
        t = time.perf_counter()
        try:
            job = EncodeJob(window, None)
            return await asyncio.wait_for(self.batcher.submit(key, job), self.limits.llm_timeout_s), None
        except TimeoutError:
            self.metrics.fallbacks.labels("genre_llm_timeout").inc()
            return None, f"LLM timed out after {self.limits.llm_timeout_s:g} s; genre counts of the history"
        except LoadShedError as err:
            self.metrics.fallbacks.labels("genre_llm_shed").inc()
            return None, f"{err}; genre counts of the history"
        except BackendError as err:
            self.metrics.fallbacks.labels("genre_llm_error").inc()
            return None, f"{err}; genre counts of the history"
        finally:
            timing["llm"] = elapsed_ms(t)

    def _counts(self, known: Sequence[int]) -> tuple[np.ndarray, str]:
        """Share of the known history items having each genre, and a sentence naming the top three."""
        counts = self.matrix[np.asarray(known, dtype=np.int64)].sum(0)  # (G,)
        top = [g for g in np.argsort(-counts, kind="stable")[:3] if counts[g] > 0]
        named = ", ".join(f"{self.genres[g]} ({int(counts[g])} of {len(known)})" for g in top)
        text = (
            f"Most frequent genres in this history: {named}." if top else "No genre on this history's items."
        )
        return counts / len(known), text
