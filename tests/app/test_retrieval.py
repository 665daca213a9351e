"""Retrieval and ranking against brute force: FAISS flat and HNSW + exact rescoring give the exact top-k,
filters hold even past the FAISS candidates, popularity order and tie-breaking, genre errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from app.domain import ItemFilters
from app.errors import InvalidRequestError
from app.retrieval import CandidateFilter, PopularityRanker, Ranker

N, D = 500, 16


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    out = np.random.default_rng(0).standard_normal((N + 1, D)).astype(np.float32)
    out[0] = 0
    return out


def brute_force(table: np.ndarray, user: np.ndarray, allowed: torch.Tensor, k: int) -> list[int]:
    scores = (table @ user).astype(np.float64)
    scores[~allowed.numpy()] = -np.inf
    return [int(i) for i in np.argsort(-scores, kind="stable")[:k]]


def all_allowed() -> torch.Tensor:
    mask = torch.ones(N + 1, dtype=torch.bool)
    mask[0] = False
    return mask


@pytest.mark.parametrize("exact_max_items", [N, 10])  # flat, HNSW
def test_top_k_equals_brute_force(table: np.ndarray, exact_max_items: int) -> None:
    ranker = Ranker(table, "cpu", exact_max_items, top_n=50)
    assert ranker.index.kind == ("flat" if exact_max_items == N else "hnsw")
    rng = np.random.default_rng(1)
    for _ in range(20):
        user = rng.standard_normal(D).astype(np.float32)
        ranked = ranker.rank(user, all_allowed(), k=10, n_blocked=0)
        assert [i for i, _ in ranked] == brute_force(table, user, all_allowed(), 10)
        np.testing.assert_allclose([s for _, s in ranked], np.sort(table @ user)[::-1][:10], rtol=1e-5)


def test_filters_that_remove_every_faiss_candidate_still_give_k(table: np.ndarray) -> None:
    ranker = Ranker(table, "cpu", N, top_n=20)
    user = table[7] * 3
    allowed = all_allowed()
    best = brute_force(table, user, allowed, 100)
    allowed[best] = False  # the 100 best items are all excluded: none of the top-N survives
    ranked = ranker.rank(user, allowed, k=5, n_blocked=0)
    assert [i for i, _ in ranked] == brute_force(table, user, allowed, 5)
    few = torch.zeros(N + 1, dtype=torch.bool)
    few[[3, 9, 400]] = True
    assert sorted(i for i, _ in ranker.rank(user, few, k=10, n_blocked=0)) == [3, 9, 400]
    assert ranker.rank(user, torch.zeros(N + 1, dtype=torch.bool), k=10, n_blocked=0) == []


def test_popularity_order_with_ties_to_the_lower_id() -> None:
    popularity = np.array([0, 5, 9, 9, 1, 0, 7], dtype=np.float32)
    ranker = PopularityRanker(popularity, "cpu")
    mask = torch.ones(7, dtype=torch.bool)
    mask[0] = False
    assert ranker.rank(mask, 10) == [(2, 9.0), (3, 9.0), (6, 7.0), (1, 5.0), (4, 1.0), (5, 0.0)]
    mask[2] = False
    assert [i for i, _ in ranker.rank(mask, 2)] == [3, 6]


def test_candidate_filter() -> None:
    genres = ["A", "B"]
    matrix = np.zeros((7, 2), dtype=bool)
    matrix[[1, 2, 3], 0] = True
    matrix[[3, 4], 1] = True
    candidates = CandidateFilter(6, genres, matrix, "cpu")
    mask, blocked = candidates.allowed(ItemFilters(genres=("B",)), seen=[4, 99])
    assert mask.nonzero().flatten().tolist() == [3] and blocked == 1  # 99 is not an item
    mask, _ = candidates.allowed(ItemFilters(include_ids=(1, 2, 5, 77), exclude_ids=(2,)), seen=[])
    assert mask.nonzero().flatten().tolist() == [1, 5]
    mask, _ = candidates.allowed(ItemFilters(), seen=[])
    assert mask.nonzero().flatten().tolist() == [1, 2, 3, 4, 5, 6]
    with pytest.raises(InvalidRequestError, match=r"unknown genre\(s\) \['C'\]; the catalog has: A, B"):
        candidates.allowed(ItemFilters(genres=("A", "C")), seen=[])


def test_cold_items_are_never_allowed_to_rankers_but_listed_apart() -> None:
    matrix = np.zeros((7, 1), dtype=bool)
    matrix[[2, 5, 6], 0] = True
    cold = np.zeros(7, dtype=bool)
    cold[[5, 6]] = True  # items 5 and 6 were added by `export add-items`
    candidates = CandidateFilter(6, ["A"], matrix, "cpu", cold=cold)
    mask, _ = candidates.allowed(ItemFilters(), seen=[])
    assert mask.nonzero().flatten().tolist() == [1, 2, 3, 4]
    assert candidates.allowed_cold(ItemFilters(), seen=[]) == [5, 6]
    assert candidates.allowed_cold(ItemFilters(genres=("A",)), seen=[6]) == [5]  # filters and seen apply
    assert candidates.allowed_cold(ItemFilters(exclude_ids=(5,)), seen=[]) == [6]
    assert CandidateFilter(6, ["A"], matrix, "cpu").allowed_cold(ItemFilters(), seen=[]) == []
