"""model=allmrec on /v1/recommend: SASRec retrieves the candidates (FAISS over its item table, after the
caller's filters), then A-LLMRec re-ranks them by the frozen LLM's summed log-likelihood of each title after
the paper's prompt (user soft token, history and candidate item soft tokens). Scores are cached by exactly
what the prompt and SASRec read; concurrent misses share one micro-batched forward. When the LLM fails or
times out the SASRec order answers, degraded. Framework-free: no HTTP, no pydantic."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.backends.base import LLMBackend
from app.batcher import BatchFn, EncodeJob, MicroBatcher
from app.cache import Store
from app.domain import Strategy
from app.errors import BackendError, LoadShedError
from app.metrics import Metrics, elapsed_ms
from models.allmrec_encoder import prompt_order


@dataclass
class Reranked:
    items: list[tuple[int, float]]  # (item id, score), best first
    strategy: Strategy
    cache_hit: bool = False
    degraded_reason: str | None = None


def scores_key(
    prefix: str, bundle_version: str, history: Sequence[int], shown: Sequence[int], template: str
) -> str:
    """Key of one prompt's candidate scores: the history SASRec and the prompt read, and the candidates in
    prompt order. Content-addressed like the user vectors (single-key GET/SET, no hash tag)."""
    what = json.dumps([template, [int(i) for i in history], [int(c) for c in shown]])
    return f"{prefix}:cs:{bundle_version}:{hashlib.sha256(what.encode()).hexdigest()}"


def rank_batch_fn(backend: LLMBackend, width: int) -> BatchFn:
    """The micro-batcher's blocking function: one backend call for the batch; rows padded with NaN to
    `width` (a filtered request may have fewer candidates than the others)."""

    def run(jobs: Sequence[EncodeJob]) -> np.ndarray:
        rows = backend.rank_candidates([j.items for j in jobs], [j.candidates for j in jobs])
        out = np.full((len(jobs), width), np.nan, dtype=np.float32)
        for b, row in enumerate(rows):
            out[b, : len(row)] = row
        return out

    return run


@dataclass(frozen=True)
class RerankConfig:
    bundle_version: str
    history_window: int  # the longest history SASRec or the prompt reads
    template_version: str
    n_candidates: int  # SASRec candidates per prompt (settings.allmrec_candidates)
    timeout_s: float
    key_prefix: str
    seed: int = 0  # of the candidates' order in the prompt


class ALLMRecReranker:
    def __init__(self, store: Store, batcher: MicroBatcher, metrics: Metrics, config: RerankConfig) -> None:
        self.store, self.batcher, self.metrics, self.config = store, batcher, metrics, config

    async def rerank(
        self, history: Sequence[int], retrieved: list[tuple[int, float]], k: int, timing: dict[str, float]
    ) -> Reranked:
        """`retrieved`: SASRec's best candidates (at most n_candidates), best first; the top k of them by
        A-LLMRec's score, or SASRec's top k (degraded) when the LLM does not answer in time."""
        if not retrieved:
            return Reranked([], "allmrec")
        c = self.config
        ids = np.array([i for i, _ in retrieved], dtype=np.int64)
        shown = ids[prompt_order(ids, c.seed)]  # the order the prompt lists them (as in training)
        window = tuple(int(i) for i in history[-c.history_window :])
        key = scores_key(c.key_prefix, c.bundle_version, window, shown.tolist(), c.template_version)
        t = time.perf_counter()
        cached = await self.store.get_vector(key)
        timing["cache"] = elapsed_ms(t)
        if cached is not None and cached.shape == (len(shown),):  # the store counted the lookup
            return Reranked(_best(shown, cached, ids, k), "allmrec", cache_hit=True)
        t = time.perf_counter()
        job = EncodeJob(window, None, tuple(int(c) for c in shown))
        try:
            row = await asyncio.wait_for(self.batcher.submit(key, job), c.timeout_s)
        except TimeoutError:
            self.metrics.fallbacks.labels("allmrec_llm_timeout").inc()
            reason = f"A-LLMRec timed out after {c.timeout_s:g} s; SASRec order"
            return Reranked(retrieved[:k], "sasrec", degraded_reason=reason)
        except LoadShedError as err:
            self.metrics.fallbacks.labels("allmrec_llm_shed").inc()
            return Reranked(retrieved[:k], "sasrec", degraded_reason=f"{err}; SASRec order")
        except BackendError as err:
            self.metrics.fallbacks.labels("allmrec_llm_error").inc()
            return Reranked(retrieved[:k], "sasrec", degraded_reason=f"{err}; SASRec order")
        finally:
            timing["llm"] = elapsed_ms(t)
        scores = np.asarray(row[: len(shown)], dtype=np.float32)
        await self.store.set_vector(key, scores)
        return Reranked(_best(shown, scores, ids, k), "allmrec")


def _best(shown: np.ndarray, scores: np.ndarray, retrieved: np.ndarray, k: int) -> list[tuple[int, float]]:
    """Top k by score; ties keep SASRec's order."""
    by_id = {int(i): float(s) for i, s in zip(shown, scores, strict=True)}
    ranked = sorted(retrieved.tolist(), key=lambda i: -by_id[int(i)])  # stable: SASRec order breaks ties
    return [(int(i), by_id[int(i)]) for i in ranked[:k]]
