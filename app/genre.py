"""/v1/explain/genre: history (body or store) → the A-LLMRec genre prompt through the LLM stage (a score per
genre, cached by the history it reads), blended with the history's own genre shares as the bundle says
(weight chosen on validation) → the top genres, and a sentence written from that ranked list, so the two
always agree. The history's genre counts answer (degraded) when the LLM fails, times out or the bundle has no
genre model; genre popularity answers an empty history. Framework-free: no HTTP, no pydantic."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.backends.base import LLMBackend
from app.batcher import BatchFn
from app.bundle import ServingBundle
from app.cache import json_codec
from app.domain import Event, ResponseMeta
from app.errors import InvalidRequestError
from app.history import Histories
from app.llm_stage import LLMStage, StageSpec
from app.metrics import elapsed_ms
from models.allmrec_genre import genre_sentence
from models.allmrec_scoring import blend_genre_scores, history_genre_shares
from models.prompts import ALLMRecPromptConfig

GenreSource = Literal["allmrec", "history_counts", "popularity"]
COUNTS_FALLBACK = "genre counts of the history"  # what answers when the LLM does not
# The sentence's lead per source; the genres it names are always the answer's list, in order.
COUNTS_LEAD = "Most frequent genres in this history:"
POPULAR_LEAD = "No known history; the most popular genres overall:"


@dataclass(frozen=True)
class GenreQuery:
    user_id: str | None
    history: tuple[Event, ...] | None  # None → the user's stored history
    top_n: int = 3


@dataclass(frozen=True)
class RankedGenre:
    name: str
    score: float


@dataclass(frozen=True)
class GenreExplanation:
    genres: list[RankedGenre]
    explanation: str
    source: GenreSource
    meta: ResponseMeta


@dataclass(frozen=True)
class GenreJob:
    """What the LLM needs for one genre prompt: the history window, oldest first."""

    items: tuple[int, ...]


@dataclass(frozen=True)
class GenreAnswer:
    """The LLM's genre prompt answer: a score per genre of the bundle's vocabulary (mean token
    log-likelihood, higher = likelier)."""

    scores: tuple[float, ...]


def _answer_json(answer: GenreAnswer) -> dict[str, Any]:
    return {"scores": list(answer.scores)}


def _answer(raw: Any) -> GenreAnswer:
    return GenreAnswer(tuple(float(s) for s in raw["scores"]))


GENRE_ANSWERS = StageSpec(
    kind="genre", label="genre_llm", what="LLM", codec=json_codec("genre", _answer_json, _answer)
)


@dataclass(frozen=True)
class ScoredGenres:
    """Scores over the genre vocabulary (G,), the sentence's lead (None: the genre prompt's own), and how they
    were obtained."""

    scores: np.ndarray
    lead: str | None
    source: GenreSource
    cache_hit: bool = False
    degraded_reason: str | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)


def genre_answers_fn(backend: LLMBackend) -> BatchFn[GenreJob, GenreAnswer]:
    """The LLM stage's blocking batch function: one backend call for the whole batch, an answer per job."""

    def run(jobs: Sequence[GenreJob]) -> list[GenreAnswer]:
        scores, _ = backend.explain_genres([list(j.items) for j in jobs])  # the sentence comes from the list
        rows = np.asarray(scores, dtype=np.float32)  # (B, G)
        return [GenreAnswer(tuple(float(s) for s in row)) for row in rows]

    return run


def softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    return z / z.sum()


class GenreService:
    def __init__(
        self,
        bundle: ServingBundle,
        histories: Histories,
        stage: LLMStage[GenreJob, GenreAnswer] | None,
    ) -> None:
        """stage: the genre prompt; None without a genre model or an LLM backend (then counts answer)."""
        self.bundle, self.histories, self.stage = bundle, histories, stage
        self.genres = bundle.genre.genres if bundle.genre is not None else bundle.catalog.genres
        index = {g: j for j, g in enumerate(self.genres)}
        self.matrix = np.zeros((bundle.catalog.n_items + 1, len(self.genres)), dtype=np.float64)  # (n+1, G)
        for item in bundle.catalog.items:
            self.matrix[item.item_id, [index[g] for g in item.genres if g in index]] = 1.0
        popular = bundle.popularity.astype(np.float64) @ self.matrix  # (G,)
        self.popular = popular / max(popular.sum(), 1.0)
        self.prompt = bundle.genre.prompt if bundle.genre is not None else ALLMRecPromptConfig()

    async def explain(self, q: GenreQuery) -> GenreExplanation:
        if not self.genres:
            raise InvalidRequestError(f"bundle {self.bundle.version} has no genre vocabulary")
        if q.top_n < 1:
            raise InvalidRequestError("top_n must be >= 1")
        start = time.perf_counter()
        history = await self.histories.resolve(q.user_id, q.history, "genres by popularity")
        scored = await self._scores(history.known_ids)
        order = np.argsort(-scored.scores, kind="stable")[: q.top_n]
        names = [self.genres[g] for g in order]
        return GenreExplanation(
            genres=[
                RankedGenre(n, round(float(scored.scores[g]), 6)) for g, n in zip(order, names, strict=True)
            ],
            explanation=genre_sentence(names, self.prompt, scored.lead),
            source=scored.source,
            meta=history.response_meta(
                self.bundle.version,
                scored.cache_hit,
                scored.degraded_reason,
                scored.timing_ms,
                elapsed_ms(start),
            ),
        )

    async def _scores(self, known: list[int]) -> ScoredGenres:
        """The genre scores and sentence: genre popularity for an empty history, else the LLM's (softmax of
        its scores), else the history's genre counts (degraded)."""
        if not known:
            return ScoredGenres(self.popular, POPULAR_LEAD, "popularity")
        if self.stage is None or self.bundle.genre is None:
            reason = f"bundle {self.bundle.version} has no A-LLMRec genre model; {COUNTS_FALLBACK}"
            return self._counts(known, reason)
        genre = self.bundle.genre
        window = known[-genre.prompt.history_len :]
        answer = await self.stage.run(
            [genre.template_version, window],
            GenreJob(tuple(window)),
            lambda a: len(a.scores) == len(self.genres),
        )
        if answer.value is None:
            return self._counts(known, f"{answer.failure}; {COUNTS_FALLBACK}", answer.timing_ms)
        llm = np.asarray(answer.value.scores, dtype=np.float64)[None]  # (1, G)
        shares = history_genre_shares([known], self.matrix)  # (1, G)
        scores = softmax(blend_genre_scores(llm, shares, genre.blend)[0])
        return ScoredGenres(scores, None, "allmrec", answer.cache_hit, None, answer.timing_ms)

    def _counts(
        self, known: Sequence[int], reason: str, timing_ms: dict[str, float] | None = None
    ) -> ScoredGenres:
        """Share of the known history items having each genre."""
        counts = self.matrix[np.asarray(known, dtype=np.int64)].sum(0)  # (G,)
        return ScoredGenres(
            counts / len(known), COUNTS_LEAD, "history_counts", False, reason, timing_ms or {}
        )
