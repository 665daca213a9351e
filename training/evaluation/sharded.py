"""Evaluation under torchrun: a Scorer whose batches of users are sharded across ranks, each rank scoring
its rows and every rank getting all scores (training/common/distributed.py does the collectives)."""

from __future__ import annotations

import numpy as np

from training.common.distributed import all_gather_rows, shard
from training.evaluation.protocol import Scorer


class ShardedScorer:
    """A `Scorer` whose every batch of users is split across ranks: each rank scores
    its contiguous rows, and all ranks get all scores, so `evaluate` returns the same metrics everywhere."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    def score(
        self,
        histories: list[np.ndarray],
        candidates: np.ndarray,
        timestamps: list[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        n, part = len(histories), shard(len(histories))
        ts = None if timestamps is None else list(timestamps)[part]
        local = np.zeros((0, candidates.shape[1]), dtype=np.float64)
        if part.stop > part.start:
            local = np.asarray(self.scorer.score(list(histories)[part], candidates[part], ts), np.float64)
        return all_gather_rows(local, n)
