"""The popularity baseline: every candidate scored by its interaction count in the training split.
Uses only `split_input(u, "train")`, so no validation or test target ever leaks into the counts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from training.data.dataset import PreparedData


class PopularityScorer:
    """Scorer ignoring the history: score(item) = its train-split count (`counts`, (n_items+1,) float32)."""

    def __init__(self, data: PreparedData) -> None:
        train = [data.split_input(u, "train") for u in range(data.n_users)]
        items = np.concatenate(train).astype(np.int64) if train else np.zeros(0, np.int64)
        self.counts = np.bincount(items, minlength=data.n_items + 1)[: data.n_items + 1].astype(np.float32)

    def score(
        self,
        histories: list[np.ndarray],
        candidates: np.ndarray,
        timestamps: list[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """(B, C) train counts of the candidate ids."""
        return self.counts[np.asarray(candidates, dtype=np.int64)]
