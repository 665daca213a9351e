"""Genre metrics against hand-computed values (pessimistic ties), labels of the held-out item, the
history-frequency baseline, vocabulary fallback, genre training examples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from models.allmrec_genre import genre_sentence
from models.prompts import ALLMRecPromptConfig
from training.allmrec.genre import genre_examples
from training.common.errors import DataError
from training.data.dataset import Item, PreparedData
from training.evaluation.genre import (
    evaluate_genres,
    genre_matrix,
    genre_metrics,
    genre_prior,
    genre_users,
    genre_vocab,
    history_genre_counts,
    rank_genres,
    sentence_problems,
    target_labels,
)

VOCAB = ["Action", "Comedy", "Drama"]


def toy_data(genres: list[str] | None = None) -> PreparedData:
    """Items 1..5: 1 Action, 2 Comedy, 3 Action+Drama, 4 none, 5 Drama."""
    item_genres = [("Action",), ("Comedy",), ("Action", "Drama"), (), ("Drama",)]
    items = [Item(i + 1, str(i + 1), f"T{i + 1}", None, g) for i, g in enumerate(item_genres)]
    sequences = [np.array(s) for s in ([1, 2, 3, 1, 5], [2, 2, 1, 4], [5, 3, 2, 3])]
    users = [f"u{u}" for u in range(len(sequences))]
    return PreparedData(
        Path("."), "toy", "watched", "movie", VOCAB if genres is None else genres, items, users, sequences,
        [None] * len(sequences),
    )  # fmt: skip


def test_metrics_by_hand_with_pessimistic_ties() -> None:
    scores = np.array([[0.9, 0.5, 0.1, 0.3], [1.0, 1.0, 1.0, 1.0]])
    labels = np.array([[False, True, False, True], [True, False, False, False]])
    assert rank_genres(scores, labels).tolist() == [[0, 1, 3, 2], [1, 2, 3, 0]]
    m = genre_metrics(scores, labels)
    d2, d3, d4 = 1 / math.log2(3), 1 / math.log2(4), 1 / math.log2(5)
    user1 = (d2 + d3) / (1 + d2)  # true genres at ranks 2 and 3 of 4
    assert m["hr@1"] == 0.0
    assert m["hr@3"] == 0.5
    assert m["recall@3"] == 0.5
    assert m["ndcg@3"] == pytest.approx(user1 / 2)
    assert m["ndcg"] == pytest.approx((user1 + d4) / 2)  # the constant scorer puts the truth last
    perfect = genre_metrics(np.array([[0.0, 2.0, 1.0]]), np.array([[False, True, True]]))
    assert perfect == pytest.approx({"hr@1": 1.0, "hr@3": 1.0, "recall@3": 1.0, "ndcg@3": 1.0, "ndcg": 1.0})


def test_metrics_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="no true genre"):
        genre_metrics(np.zeros((1, 3)), np.zeros((1, 3), dtype=bool))
    with pytest.raises(ValueError, match="same"):
        genre_metrics(np.zeros((1, 3)), np.ones((1, 2), dtype=bool))
    with pytest.raises(ValueError, match="NaN"):
        genre_metrics(np.array([[np.nan, 1.0]]), np.array([[True, False]]))


def test_labels_are_the_held_out_items_genres() -> None:
    data = toy_data()
    matrix = genre_matrix(data, VOCAB)
    assert matrix[3].tolist() == [True, False, True] and not matrix[4].any() and not matrix[0].any()
    users = genre_users(data, matrix, "test", 0, 0)
    assert users.tolist() == [0, 2]  # user 1's test item (4) has no genre
    assert target_labels(data, users, matrix, "test").tolist() == [[False, False, True], [True, False, True]]
    assert genre_users(data, matrix, "valid", 0, 0).tolist() == [0, 1, 2]


def test_history_frequency_baseline_and_prior() -> None:
    data = toy_data()
    matrix = genre_matrix(data, VOCAB)
    counts = history_genre_counts([np.array([1, 3, 3, 2]), np.array([4])], matrix)
    assert counts.tolist() == [[3, 1, 2], [0, 0, 0]]
    prior = genre_prior(data, matrix)  # train inputs s[:-2]: [1,2,3], [2,2], [5,3]
    assert prior == pytest.approx(np.array([3, 3, 3]) / 9)  # A 2+0+1, C 1+2+0, D 1+0+2
    metrics = evaluate_genres(
        data, lambda h, _u: history_genre_counts(h, matrix), [0, 2], matrix, batch_size=1
    )
    # user 0: input [1,2,3,1] → Action 3, Comedy 1, Drama 1 → truth {Drama} at rank 3 (tie, pessimistic)
    # user 2: input [5,3,2] → Drama 2, Action 1, Comedy 1 → truth {Action, Drama} at ranks 1 and 3
    assert metrics["hr@1"] == 0.5 and metrics["hr@3"] == 1.0 and metrics["recall@3"] == 1.0
    assert metrics["n_users"] == 2.0


def test_vocabulary_falls_back_to_catalog_and_refuses_none() -> None:
    assert genre_vocab(toy_data(genres=[])) == ["Action", "Comedy", "Drama"]
    data = toy_data(genres=[])
    data.items = [Item(i.item_id, i.original_id, i.title, None, ()) for i in data.items]
    with pytest.raises(DataError, match="has no genres"):
        genre_vocab(data)


def test_genre_training_examples_use_the_train_target() -> None:
    examples = genre_examples(toy_data(), VOCAB, 0, 0)
    # train sequences s[:-2]: [1,2,3] → input [1,2], target 3; [2,2] → target 2; [5,3] → target 3
    assert [e.history.tolist() for e in examples] == [[1, 2], [2], [5]]
    assert [e.genres for e in examples] == [["Action", "Drama"], ["Comedy"], ["Action", "Drama"]]


def test_sentence_problems_flag_what_the_issue_saw() -> None:
    """The free continuation's faults (issue 12) are caught; a sentence written from the list has none."""
    lead = "The movie genres this user likes most are:"
    vocab = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
    ranked = ["Sci-Fi", "Drama", "Horror"]
    assert sentence_problems(f"{lead} Drama.", lead, ranked, vocab) == ["disagrees"]
    assert "repeats" in sentence_problems(f"{lead} Comedy, Romance, and Comedy.", lead, ranked, vocab)
    assert "cut" in sentence_problems(f"{lead} Horror, Sci-Fi, Sci-.", lead, ranked, vocab)
    assert "cut" in sentence_problems(f"{lead} Sci-Fi, Drama, Horror", lead, ranked, vocab)
    written = genre_sentence(ranked, ALLMRecPromptConfig())
    assert written.startswith(lead) and sentence_problems(written, lead, ranked, vocab) == []
