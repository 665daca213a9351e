"""The evaluation on the real ml-100k, prepared by `prepare_dataset` into a temporary directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data.dataset import PreparedData, load_prepared
from training.data.prepare import PrepareConfig, prepare_dataset
from training.evaluation.candidates import candidates_path
from training.evaluation.popularity import PopularityScorer
from training.evaluation.protocol import evaluate


@pytest.fixture(scope="module")
def ml100k(shared_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> PreparedData:
    out = tmp_path_factory.mktemp("ml100k") / "processed"
    return load_prepared(prepare_dataset(PrepareConfig(dataset="ml-100k"), shared_data_dir / "ml-100k", out))


class Constant:
    def score(self, histories, candidates, timestamps=None):
        return np.zeros(candidates.shape)


def test_candidates_on_ml100k_are_valid_and_stable(ml100k: PreparedData) -> None:
    first = evaluate(ml100k, PopularityScorer(ml100k), "1+99", progress=False)
    with np.load(candidates_path(ml100k.root, "test", "1+99", 0)) as npz:
        users, table = npz["users"], npz["candidates"]
    assert sorted(users.tolist()) == list(range(ml100k.n_users)) and table.shape == (ml100k.n_users, 100)
    for u, row in zip(users, table, strict=True):
        assert row[0] == ml100k.split_target(int(u), "test")
        assert not np.isin(row[1:], ml100k.sequences[u]).any() and len(set(row[1:].tolist())) == 99
    assert evaluate(ml100k, PopularityScorer(ml100k), "1+99", progress=False) == first


def test_popularity_on_ml100k_is_a_sane_baseline(ml100k: PreparedData) -> None:
    pop = PopularityScorer(ml100k)
    sampled = evaluate(ml100k, pop, "1+99", progress=False)
    easy = evaluate(ml100k, pop, "1+19", progress=False)
    full = evaluate(ml100k, pop, "full", progress=False)
    constant = evaluate(ml100k, Constant(), "1+99", progress=False)
    assert constant["hr@20"] == 0.0 and constant["mrr"] == 0.01
    assert 0.3 < sampled["hr@10"] < 0.5  # MostPop on ml-100k, 1+99, as in the literature
    assert full["ndcg@10"] < sampled["ndcg@10"] < easy["ndcg@10"]
    assert evaluate(ml100k, pop, "1+99", shuffle=True, progress=False)["ndcg@10"] == sampled["ndcg@10"]
