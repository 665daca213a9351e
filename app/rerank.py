"""The re-rank stage of /v1/recommend: a Reranker reads the ranker's best candidates and answers the top k.
IdentityReranker keeps the ranker's order (every model that ranks the whole catalogue); app.allmrec's
A-LLMRec reranker rescores SASRec's candidates with the LLM. Framework-free: no HTTP, no pydantic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from app.domain import Strategy


@dataclass(frozen=True)
class Ranking:
    """Items best first with their scores, what ranked them and what happened on the way (timing_ms: each
    stage's milliseconds so far)."""

    items: list[tuple[int, float]]
    strategy: Strategy
    cache_hit: bool = False
    degraded_reason: str | None = None
    timing_ms: dict[str, float] = field(default_factory=dict)


class Reranker(Protocol):
    def candidates(self, k: int) -> int:
        """How many of the ranker's best items it reads to answer the top k; InvalidRequestError when it
        cannot answer k (checked before any I/O)."""
        ...

    async def rerank(
        self,
        history: Sequence[int],
        ranking: Ranking,
        k: int,
        cold: Sequence[int] = (),
        user: np.ndarray | None = None,
    ) -> Ranking:
        """The top k of `ranking` (at most candidates(k) items) for a user with this known history; `cold`:
        the cold items the request allows (no CF row: only a text-aware reranker can add them); `user`: the
        ranker's user vector."""
        ...


class IdentityReranker:
    """The ranker's order is the answer."""

    def candidates(self, k: int) -> int:
        return k

    async def rerank(
        self,
        history: Sequence[int],
        ranking: Ranking,
        k: int,
        cold: Sequence[int] = (),
        user: np.ndarray | None = None,
    ) -> Ranking:
        return ranking
