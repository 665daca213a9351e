"""Ranking metrics as pure numpy functions: scores → 0-based target ranks → NDCG / HR / MRR.
Knows nothing about models, candidates or files."""

from __future__ import annotations

import numpy as np

METRIC_KEYS = ("ndcg@10", "ndcg@20", "hr@1", "hr@10", "hr@20", "mrr")


def rank_targets(scores: np.ndarray, target_index: np.ndarray | int = 0) -> np.ndarray:
    """0-based rank of each row's target among its candidates, ties broken pessimistically.

    rank = number of *other* candidates scoring >= the target, so a constant scorer ranks last, not
    first. `-inf` marks masked candidates; NaN scores are a model bug and raise."""
    scores = np.asarray(scores, dtype=np.float64)  # (B, C)
    if scores.ndim != 2:
        raise ValueError(f"scores must be (B, C), got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"scorer returned {int(np.isnan(scores).sum())} NaN scores")
    index = np.broadcast_to(np.asarray(target_index, dtype=np.int64), (scores.shape[0],))
    target = scores[np.arange(scores.shape[0]), index]  # (B,)
    return (scores >= target[:, None]).sum(axis=1) - 1  # the target itself is always >= itself


def ndcg_gains(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per target, NDCG@k with one relevant item: 1/log2(rank+2) within the top k, else 0."""
    ranks = np.asarray(ranks)
    return np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)


def hits(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per target, 1.0 when ranked within the top k, else 0.0."""
    return (np.asarray(ranks) < k).astype(np.float64)


def ndcg_at_k(ranks: np.ndarray, k: int) -> float:
    """Mean of 1/log2(rank+2) over targets ranked within the top k (one relevant item per user)."""
    return float(ndcg_gains(ranks, k).mean()) if np.asarray(ranks).size else 0.0


def hit_rate_at_k(ranks: np.ndarray, k: int) -> float:
    """Fraction of targets ranked within the top k."""
    return float(hits(ranks, k).mean()) if np.asarray(ranks).size else 0.0


def mean_reciprocal_rank(ranks: np.ndarray) -> float:
    """Mean of 1/(rank+1) over all targets."""
    ranks = np.asarray(ranks)
    return float((1.0 / (ranks + 1.0)).mean()) if ranks.size else 0.0


def compute_metrics(ranks: np.ndarray) -> dict[str, float]:
    """Every reported metric, keyed as in METRIC_KEYS."""
    return {
        "ndcg@10": ndcg_at_k(ranks, 10),
        "ndcg@20": ndcg_at_k(ranks, 20),
        "hr@1": hit_rate_at_k(ranks, 1),
        "hr@10": hit_rate_at_k(ranks, 10),
        "hr@20": hit_rate_at_k(ranks, 20),
        "mrr": mean_reciprocal_rank(ranks),
    }
