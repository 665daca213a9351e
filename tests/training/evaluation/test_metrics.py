"""Metrics against hand-computed values, and pessimistic tie handling in rank_targets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.evaluation.metrics import (
    compute_metrics,
    hit_rate_at_k,
    mean_reciprocal_rank,
    ndcg_at_k,
    rank_targets,
)


def test_single_ranks_by_hand() -> None:
    assert ndcg_at_k(np.array([0]), 10) == 1.0
    assert ndcg_at_k(np.array([1]), 10) == pytest.approx(1 / math.log2(3))  # 0.6309…
    assert ndcg_at_k(np.array([9]), 10) == pytest.approx(1 / math.log2(11))
    assert ndcg_at_k(np.array([10]), 10) == 0.0
    assert ndcg_at_k(np.array([10]), 20) == pytest.approx(1 / math.log2(12))
    assert ndcg_at_k(np.array([20]), 20) == 0.0
    assert hit_rate_at_k(np.array([0]), 1) == 1.0
    assert hit_rate_at_k(np.array([1]), 1) == 0.0
    assert hit_rate_at_k(np.array([9]), 10) == 1.0
    assert hit_rate_at_k(np.array([10]), 10) == 0.0
    assert mean_reciprocal_rank(np.array([0])) == 1.0
    assert mean_reciprocal_rank(np.array([3])) == 0.25


def test_compute_metrics_on_several_users() -> None:
    ranks = np.array([0, 1, 10, 25])
    m = compute_metrics(ranks)
    assert m["hr@1"] == 0.25
    assert m["hr@10"] == 0.5
    assert m["hr@20"] == 0.75
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3)) / 4)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(12)) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 / 11 + 1 / 26) / 4)


def test_empty_ranks_give_zero() -> None:
    assert compute_metrics(np.zeros(0, dtype=np.int64)) == dict.fromkeys(compute_metrics(np.array([5])), 0.0)


def test_constant_scores_rank_the_target_last() -> None:
    ranks = rank_targets(np.ones((3, 100)))
    assert ranks.tolist() == [99, 99, 99]
    assert compute_metrics(ranks)["hr@1"] == 0.0
    assert compute_metrics(ranks)["mrr"] == pytest.approx(0.01)


def test_ties_count_against_the_target() -> None:
    scores = np.array([[0.5, 0.9, 0.5, 0.1], [0.5, 0.1, 0.2, 0.3], [0.1, 0.2, 0.3, 0.4]])
    assert rank_targets(scores).tolist() == [2, 0, 3]


def test_target_index_per_row_and_masked_candidates() -> None:
    scores = np.array([[3.0, -np.inf, 1.0], [-np.inf, 2.0, 5.0]])
    assert rank_targets(scores, np.array([2, 1])).tolist() == [1, 1]
    assert rank_targets(scores, 0).tolist() == [0, 2]  # a masked target ties with the other masked items


def test_nan_scores_raise() -> None:
    with pytest.raises(ValueError, match="NaN"):
        rank_targets(np.array([[np.nan, 1.0]]))
