"""model=allmrec on /v1/recommend: SASRec retrieves the candidates (FAISS over its item table, after the
caller's filters), then A-LLMRec re-ranks them by the frozen LLM's log-likelihood of each title after the
paper's prompt (user soft token, history and candidate item soft tokens), calibrated and blended with SASRec's
score as the bundle's `scoring` says (chosen on validation, models/allmrec_scoring.py). The LLM scores come
through the LLM stage, cached by exactly what the prompt and SASRec read (and the score mode); when the LLM
fails or times out the SASRec order answers, degraded. Cold items (added by `llmrec export add-items`, no CF
row) join SASRec's candidates by their text: the `cold_candidates` allowed cold items whose MiniLM text is
nearest the history's (models/cold_items.py); SASRec has no trained row for them, so the blend gives them,
as the bundle's scoring says, the mean SASRec score of the request's warm candidates (neutral) or SASRec's
user vector against stage 1's text-predicted embedding plus the offset chosen on validation (`cold_offset`).
Framework-free: no HTTP, no pydantic."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from app.backends.base import LLMBackend
from app.batcher import BatchFn
from app.cache import VECTOR
from app.errors import InvalidRequestError
from app.llm_stage import LLMStage, StageSpec
from app.metrics import elapsed_ms
from app.rerank import Ranking
from models.allmrec_encoder import prompt_order
from models.allmrec_scoring import ALLMRecScoring, blend
from models.cold_items import text_scores

CANDIDATE_SCORES = StageSpec(kind="cs", label="allmrec_llm", what="A-LLMRec", codec=VECTOR)


@dataclass(frozen=True)
class RankJob:
    """What the LLM needs for one A-LLMRec prompt: the history window (oldest first) and the candidates in
    the order the prompt lists them."""

    history: tuple[int, ...]
    candidates: tuple[int, ...]


def candidate_scores_fn(backend: LLMBackend) -> BatchFn[RankJob, np.ndarray]:
    """The LLM stage's blocking batch function: one backend call for the batch; a float32 row of scores per
    job, one per candidate in prompt order (a filtered request may have fewer candidates than the others)."""

    def run(jobs: Sequence[RankJob]) -> list[np.ndarray]:
        rows = backend.rank_candidates([j.history for j in jobs], [j.candidates for j in jobs])
        return [np.asarray(row, dtype=np.float32) for row in rows]

    return run


@dataclass(frozen=True)
class RerankConfig:
    template_version: str  # of the bundle's A-LLMRec prompt
    n_candidates: int  # SASRec candidates per prompt (settings.allmrec_candidates)
    history_window: int  # the longest history SASRec or the prompt reads
    seed: int = 0  # of the candidates' order in the prompt
    scoring: ALLMRecScoring = field(default_factory=ALLMRecScoring)  # the bundle's: mode, SASRec blend
    cold_candidates: int = 0  # cold items added to SASRec's candidates by text (settings); 0 = none


class ALLMRecReranker:
    def __init__(
        self,
        stage: LLMStage[RankJob, np.ndarray],
        config: RerankConfig,
        text_emb: Tensor | None = None,
        imputed: np.ndarray | None = None,
    ) -> None:
        """text_emb: stage 1's (n + 1, d_text) text table, to find cold candidates (None: none); imputed: its
        (n + 1, d_cf) text-predicted CF table (ALLMRecStage1.imputed_cf), SASRec's side of a cold candidate
        when the scoring has a `cold_offset`."""
        self.stage, self.config, self.text_emb, self.imputed = stage, config, text_emb, imputed

    def candidates(self, k: int) -> int:
        n = self.config.n_candidates
        if k > n:
            raise InvalidRequestError(
                f"k={k} exceeds the {n} SASRec candidates A-LLMRec re-ranks (allmrec_candidates)"
            )
        return n

    def cold_picks(self, window: Sequence[int], cold: Sequence[int]) -> list[int]:
        """The allowed cold items whose text is nearest the history's, best first (ties: lower id)."""
        n = self.config.cold_candidates
        if not n or not cold or not window or self.text_emb is None:
            return []
        device = self.text_emb.device
        ids = torch.tensor(cold, dtype=torch.long, device=device)
        scores = text_scores(self.text_emb, torch.tensor(window, dtype=torch.long, device=device), ids)
        best = torch.sort(scores, descending=True, stable=True).indices[:n]
        return ids[best].tolist()

    async def rerank(
        self,
        history: Sequence[int],
        ranking: Ranking,
        k: int,
        cold: Sequence[int] = (),
        user: np.ndarray | None = None,
    ) -> Ranking:
        """The top k of SASRec's candidates plus the text-picked cold ones by A-LLMRec's score, or SASRec's
        top k (degraded) when the LLM does not answer in time. `user`: SASRec's user vector (what scores
        the cold candidates from their text-predicted embeddings)."""
        start, c = time.perf_counter(), self.config
        reranked = Ranking([], "allmrec")
        window = tuple(int(i) for i in history[-c.history_window :])
        picks = self.cold_picks(window, cold)
        if ranking.items or picks:
            ids = np.array([i for i, _ in ranking.items] + picks, dtype=np.int64)
            shown = ids[prompt_order(ids, c.seed)]  # the order the prompt lists them (as in training)
            job = RankJob(window, tuple(int(i) for i in shown))
            # cached by what SASRec and the prompt read: the history window and the candidates in prompt order
            answer = await self.stage.run(
                [c.template_version, c.scoring.mode, list(job.history), list(job.candidates)],
                job,
                lambda s: s.shape == shown.shape,
            )
            if answer.value is None:
                reason = f"{answer.failure}; SASRec order"
                reranked = Ranking(
                    ranking.items[:k], "sasrec", degraded_reason=reason, timing_ms=answer.timing_ms
                )
            else:
                sasrec, cold_mask, imputed = self._sasrec_side(ranking, shown, picks, user)
                row = blend(answer.value[None], sasrec, c.scoring, cold_mask, imputed)[0]
                items = _best(shown, row, ids, k)
                reranked = Ranking(items, "allmrec", answer.cache_hit, timing_ms=answer.timing_ms)
        timing = {**ranking.timing_ms, **reranked.timing_ms, "rerank": elapsed_ms(start)}
        return dataclasses.replace(reranked, timing_ms=timing)

    def _sasrec_side(
        self, ranking: Ranking, shown: np.ndarray, picks: list[int], user: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(1, C) each, in prompt order: SASRec's retrieval scores (0 for the cold picks), which candidates
        are cold picks, and SASRec's scores of their text-predicted embeddings (None without them or a
        user)."""
        retrieved = dict(ranking.items)
        sasrec = np.array([[retrieved.get(int(i), 0.0) for i in shown]])
        cold = np.isin(shown, picks)[None]
        imputed = None
        if cold.any() and user is not None and self.imputed is not None:
            imputed = (self.imputed[shown] @ np.asarray(user, np.float64))[None]
        return sasrec, cold, imputed


def _best(shown: np.ndarray, scores: np.ndarray, retrieved: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Top k by score; ties keep SASRec's order."""
    by_id = {int(i): float(s) for i, s in zip(shown, scores, strict=True)}
    ranked = sorted(retrieved.tolist(), key=lambda i: -by_id[int(i)])  # stable: SASRec order breaks ties
    return [(int(i), by_id[int(i)]) for i in ranked[:k]]
