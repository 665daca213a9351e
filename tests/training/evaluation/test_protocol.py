"""evaluate(): oracle / constant / popularity scorers with hand-known results, full-catalogue masking,
shared candidates across scorers, seeded user subsets, and shuffled histories with shuffle_cosine."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

from tests.training.evaluation.toy_data import make_data, random_data
from training.common.errors import ConfigError
from training.data.dataset import PreparedData
from training.evaluation import protocol
from training.evaluation.candidates import select_users
from training.evaluation.metrics import METRIC_KEYS
from training.evaluation.popularity import PopularityScorer
from training.evaluation.protocol import UserVectorScorer, evaluate, shuffle_histories


class Recorder:
    """Scores 0 for everything; remembers what it was given."""

    def __init__(self) -> None:
        self.histories: list[np.ndarray] = []
        self.timestamps: list[np.ndarray | None] = []
        self.candidates: list[np.ndarray] = []

    def score(self, histories, candidates, timestamps=None):
        self.histories += histories
        self.timestamps += timestamps
        self.candidates.append(np.array(candidates))
        return np.zeros(candidates.shape, dtype=np.float32)


class Oracle:
    """Knows each user's next item from the history it is given."""

    def __init__(self, data: PreparedData, split: Literal["valid", "test"]) -> None:
        users = range(data.n_users)
        self.next = {data.split_input(u, split).tobytes(): data.split_target(u, split) for u in users}

    def score(self, histories, candidates, timestamps=None):
        targets = np.array([self.next[h.tobytes()] for h in histories])
        return (candidates == targets[:, None]).astype(np.float32)


class BagOfItems:
    """User vector = item counts: blind to order. Scores are the counts of the candidates."""

    def __init__(self, n_items: int) -> None:
        self.n_items = n_items

    def user_vectors(self, histories, timestamps=None):
        return np.stack([np.bincount(h, minlength=self.n_items + 1).astype(np.float64) for h in histories])

    def score(self, histories, candidates, timestamps=None):
        users = self.user_vectors(histories)
        return np.take_along_axis(users, candidates, axis=1)


class RecencyWeighted(BagOfItems):
    """User vector weights items by position: order matters."""

    def user_vectors(self, histories, timestamps=None):
        out = np.zeros((len(histories), self.n_items + 1))
        for row, h in enumerate(histories):
            np.add.at(out[row], h, 2.0 ** np.arange(len(h)))
        return out


@pytest.mark.parametrize("proto", ["1+99", "1+19", "full"])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_oracle_is_perfect(tmp_path: Path, proto: str, split: Literal["valid", "test"]) -> None:
    data = random_data(tmp_path, n_users=40, n_items=300)
    result = evaluate(data, Oracle(data, split), proto, split=split, progress=False)
    assert result == dict.fromkeys(METRIC_KEYS, 1.0) | {
        "protocol": proto,
        "split": split,
        "n_users": 40,
        "seed": 0,
        "shuffle": False,
    }


def test_constant_scorer_gets_the_worst_rank(tmp_path: Path) -> None:
    data = random_data(tmp_path, n_users=30, n_items=300)
    result = evaluate(data, Recorder(), "1+99", progress=False)
    assert result["hr@1"] == 0.0 and result["hr@20"] == 0.0 and result["mrr"] == 0.01
    full = evaluate(data, Recorder(), "full", progress=False)
    # ties with every unmasked item: rank = n_items - |distinct history without target| - 1
    expected = [
        data.n_items - len(set(data.split_input(u, "test").tolist()) - {data.split_target(u, "test")}) - 1
        for u in range(data.n_users)
    ]
    assert full["mrr"] == pytest.approx(np.mean(1 / (np.array(expected) + 1)), abs=1e-6)


def _toy(root: Path) -> PreparedData:
    # train counts (s[:-2]): item 1 → 4, item 2 → 3, item 3 → 1, items 4, 5 → 0
    return make_data(root, [[1, 2, 3, 4], [1, 2, 5, 3], [2, 1, 4, 5], [3, 1, 2, 4]], n_items=5)


def test_popularity_counts_come_from_the_training_split_only(tmp_path: Path) -> None:
    assert PopularityScorer(_toy(tmp_path)).counts.tolist() == [0, 4, 3, 1, 0, 0]


def test_popularity_full_ranking_by_hand(tmp_path: Path) -> None:
    # history masked; ranks: u0 target 4 ties 5 → 1; u1 target 3 beats 4 → 0; u2 target 5 below 3 → 1;
    # u3 target 4 ties 5 → 1
    result = evaluate(_toy(tmp_path), PopularityScorer(_toy(tmp_path)), "full", progress=False)
    assert result["hr@1"] == 0.25 and result["hr@10"] == 1.0
    assert result["ndcg@10"] == pytest.approx((3 / math.log2(3) + 1) / 4, abs=1e-6)
    assert result["mrr"] == pytest.approx(0.625)


def test_popularity_on_sampled_candidates_by_hand(tmp_path: Path) -> None:
    # train counts: item 40 → 10 (fans), 5 → 5, 7 → 5. Lucky users' target 40 outscores any negative
    # (rank 0); every other target has count 0 and ties with all 19 negatives (rank 19, pessimistic).
    fans, lucky, unlucky = [[40, 2, 3]] * 10, [[5, 6, 40]] * 5, [[7, 8, 9]] * 5
    data = make_data(tmp_path, fans + lucky + unlucky, n_items=40)
    result = evaluate(data, PopularityScorer(data), "1+19", progress=False)
    assert result["hr@1"] == 0.25 and result["hr@10"] == 0.25 and result["hr@20"] == 1.0
    assert result["ndcg@10"] == 0.25
    assert result["ndcg@20"] == pytest.approx(0.25 + 0.75 / math.log2(21), abs=1e-6)
    assert result["mrr"] == pytest.approx(0.25 + 0.75 / 20, abs=1e-6)


def test_full_protocol_masks_history_but_not_a_repeated_target(tmp_path: Path) -> None:
    data = make_data(tmp_path, [[1, 2, 3, 2], [4, 5, 6, 7]], n_items=10)

    class LovesHistory:
        def score(self, histories, candidates, timestamps=None):
            return np.stack(
                [
                    np.isin(c, h).astype(float) * 10 + c / 100
                    for h, c in zip(histories, candidates, strict=True)
                ]
            )

    # user 0: target 2 is in its history: kept, scores 10.02 vs masked 1, 3 → rank 0
    # user 1: history 4, 5, 6 masked; target 7 scores 0.07 < 0.08, 0.09, 0.10 → rank 3
    result = evaluate(data, LovesHistory(), "full", progress=False)
    assert result["hr@1"] == 0.5 and result["mrr"] == pytest.approx((1 + 1 / 4) / 2)


def test_full_protocol_batches_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = random_data(tmp_path, n_users=50, n_items=300)
    scorer = PopularityScorer(data)
    big = evaluate(data, scorer, "full", progress=False)
    monkeypatch.setattr(protocol, "FULL_BUDGET", 1000)
    rec = Recorder()
    evaluate(data, rec, "full", progress=False)
    assert max(c.shape[0] for c in rec.candidates) == 3 and all(c.shape[1] == 300 for c in rec.candidates)
    assert evaluate(data, scorer, "full", progress=False) == big


def test_every_scorer_sees_the_same_stored_candidates(tmp_path: Path) -> None:
    data = random_data(tmp_path, n_users=70, n_items=400)
    first, second = Recorder(), Recorder()
    evaluate(data, first, "1+99", batch_size=16, progress=False)
    evaluate(data, second, "1+99", batch_size=64, progress=False, shuffle=True)
    assert np.array_equal(np.concatenate(first.candidates), np.concatenate(second.candidates))
    with np.load(tmp_path / "candidates" / "test_1+99_seed0.npz") as npz:
        assert npz["candidates"].shape == (70, 100)


def test_max_users_evaluates_the_seeded_subset(tmp_path: Path) -> None:
    data = random_data(tmp_path, n_users=50, n_items=200)
    rec = Recorder()
    result = evaluate(data, rec, "1+19", split="valid", max_users=12, seed=5, progress=True)
    users = select_users(50, 12, seed=5)
    assert result["n_users"] == 12 and result["seed"] == 5
    assert [h.tolist() for h in rec.histories] == [data.split_input(int(u), "valid").tolist() for u in users]


def test_shuffled_histories_are_what_the_scorer_sees(tmp_path: Path) -> None:
    seqs = [list(range(1 + 10 * u, 11 + 10 * u)) for u in range(20)]
    stamps: list[list[int] | None] = [[100 * i for i in s] for s in seqs]  # timestamp = 100 × item id
    data = make_data(tmp_path, seqs, n_items=250, timestamps=stamps)
    rec = Recorder()
    result = evaluate(data, rec, "1+19", shuffle=True, seed=2, progress=False)
    originals = [data.split_input(u, "test") for u in range(20)]
    expected, _ = shuffle_histories(originals, [data.split_timestamps(u, "test") for u in range(20)], seed=2)
    assert [h.tolist() for h in rec.histories] == [h.tolist() for h in expected]
    assert any(h.tolist() != o.tolist() for h, o in zip(rec.histories, originals, strict=True))
    for h, t, o in zip(rec.histories, rec.timestamps, originals, strict=True):
        assert sorted(h.tolist()) == o.tolist() and t is not None and t.tolist() == (h * 100).tolist()
    assert result["shuffle"] is True and "shuffle_cosine" not in result  # no user_vectors on Recorder


def test_shuffle_cosine_separates_order_blind_and_order_aware_scorers(tmp_path: Path) -> None:
    data = random_data(tmp_path, n_users=30, n_items=200)
    assert isinstance(BagOfItems(200), UserVectorScorer)
    blind = evaluate(data, BagOfItems(200), "1+19", shuffle=True, progress=False)
    aware = evaluate(data, RecencyWeighted(200), "1+19", shuffle=True, progress=False)
    assert blind["shuffle_cosine"] == pytest.approx(1.0)
    assert aware["shuffle_cosine"] < 0.9
    assert "shuffle_cosine" not in evaluate(data, RecencyWeighted(200), "1+19", progress=False)


def test_bad_arguments_and_bad_scores_raise(tmp_path: Path) -> None:
    data = random_data(tmp_path, n_users=5, n_items=100)
    with pytest.raises(ConfigError, match="protocol"):
        evaluate(data, Recorder(), "1+5", progress=False)
    with pytest.raises(ConfigError, match="split"):
        evaluate(data, Recorder(), "1+19", split="train", progress=False)

    class WrongShape:
        def score(self, histories, candidates, timestamps=None):
            return np.zeros((len(histories), 3))

    with pytest.raises(ValueError, match=r"shape \(5, 3\)"):
        evaluate(data, WrongShape(), "1+19", progress=False)
