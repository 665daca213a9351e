"""Favourite-genre evaluation: the genre vocabulary and item → genre matrix of a processed dataset, labels
(genres of a user's held-out next item), genre-ranking metrics (pure numpy) and the two cheap baselines
(genres most frequent in the history; global genre popularity). Knows no LLM."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from training.common.errors import DataError
from training.data.dataset import PreparedData, seeded_subset

GENRE_METRIC_KEYS = ("hr@1", "hr@3", "recall@3", "ndcg@3", "ndcg")
# (histories, users) → (B, G) scores; higher = likelier genre.
GenreScoreFn = Callable[[Sequence[np.ndarray], Sequence[int]], np.ndarray]


def genre_vocab(data: PreparedData) -> list[str]:
    """The dataset's declared genres, else every genre found in the catalog (sorted)."""
    vocab = list(data.genres) or sorted({g for item in data.items for g in item.genres})
    if not vocab:
        raise DataError(
            f"dataset {data.name!r} has no genres (genre prediction needs MovieLens-style genres)"
        )
    return vocab


def genre_matrix(data: PreparedData, vocab: Sequence[str]) -> np.ndarray:
    """(n_items + 1, G) bool: item i has genre g; row 0 (padding) has none; genres outside `vocab` ignored."""
    index = {g: j for j, g in enumerate(vocab)}
    out = np.zeros((data.n_items + 1, len(vocab)), dtype=bool)
    for item in data.items:
        out[item.item_id, [index[g] for g in item.genres if g in index]] = True
    return out


def genre_users(
    data: PreparedData, matrix: np.ndarray, split: Literal["valid", "test"], max_users: int, seed: int
) -> np.ndarray:
    """Users whose held-out item has at least one genre; a seeded subset of `max_users` (0 = all), sorted."""
    users = np.array(
        [u for u in range(data.n_users) if matrix[data.split_target(u, split)].any()], dtype=np.int64
    )
    return seeded_subset(users, max_users, seed)


def target_labels(
    data: PreparedData, users: Sequence[int], matrix: np.ndarray, split: Literal["valid", "test"]
) -> np.ndarray:
    """(U, G) bool: the genres of each user's held-out next item."""
    return np.stack([matrix[data.split_target(int(u), split)] for u in users])


def rank_genres(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(U, G) genre indices best first; ties broken pessimistically (a true genre goes after tied others)."""
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be the same (U, G) shape")
    if np.isnan(scores).any():
        raise ValueError("genre scores contain NaN")
    return np.lexsort((labels, -scores), axis=1)  # last key is primary: score desc, then false before true


def genre_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """HR@1/@3 (a true genre in the top k), recall@3 (share of the true genres — at most 3 — in the top 3),
    NDCG@3 and NDCG over the whole genre list (binary relevance). Users without a true genre are an error."""
    labels = np.asarray(labels, dtype=bool)
    order = rank_genres(scores, labels)
    rel = np.take_along_axis(labels, order, axis=1).astype(np.float64)  # (U, G) relevance in ranked order
    n_true = labels.sum(1)
    if (n_true == 0).any():
        raise ValueError(f"{int((n_true == 0).sum())} users have no true genre")
    discount = 1.0 / np.log2(np.arange(labels.shape[1]) + 2.0)  # (G,)
    ideal = np.cumsum(discount)[n_true - 1]  # (U,) all true genres on top
    ideal3 = np.cumsum(discount[:3])[np.minimum(n_true, 3) - 1]
    return {
        "hr@1": float(rel[:, 0].mean()),
        "hr@3": float((rel[:, :3].sum(1) > 0).mean()),
        "recall@3": float((rel[:, :3].sum(1) / np.minimum(n_true, 3)).mean()),
        "ndcg@3": float(((rel[:, :3] * discount[:3]).sum(1) / ideal3).mean()),
        "ndcg": float(((rel * discount).sum(1) / ideal).mean()),
    }


def history_genre_counts(histories: Sequence[np.ndarray], matrix: np.ndarray) -> np.ndarray:
    """(B, G) how many history items have each genre: the 'most frequent genres' baseline's scores."""
    return np.stack([matrix[np.asarray(h, dtype=np.int64)].sum(0) for h in histories]).astype(np.float64)


def genre_prior(data: PreparedData, matrix: np.ndarray) -> np.ndarray:
    """(G,) share of all train interactions (s[:-2]) per genre: a user-independent reference."""
    counts = np.zeros(matrix.shape[1])
    for u in range(data.n_users):
        counts += matrix[data.split_input(u, "valid")].sum(0)
    return counts / max(counts.sum(), 1.0)


def evaluate_genres(
    data: PreparedData,
    score_fn: GenreScoreFn,
    users: Sequence[int],
    matrix: np.ndarray,
    split: Literal["valid", "test"] = "test",
    batch_size: int = 16,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Score every user's input history (test: s[:-1]) and compare with the held-out item's genres."""
    labels = target_labels(data, users, matrix, split)
    chunks = []
    for begin in range(0, len(users), batch_size):
        part = [int(u) for u in users[begin : begin + batch_size]]
        chunks.append(
            np.asarray(score_fn([data.split_input(u, split) for u in part], part), dtype=np.float64)
        )
        if on_batch is not None:
            on_batch(len(part))
    return {**genre_metrics(np.concatenate(chunks), labels), "n_users": float(len(users))}


def sentence_problems(sentence: str, lead: str, ranked: Sequence[str], vocab: Sequence[str]) -> list[str]:
    """What is wrong with a genre explanation given the answer's ranked top genres: `disagrees` (it names
    other genres, or the same in another order), `repeats` (a genre twice), `cut` (no final full stop, or
    a last item that is not a whole genre name). [] for a sentence a person can trust."""
    text = sentence.strip()
    body = text.removeprefix(lead).strip()
    cut = not body.endswith(".")
    items = [p.strip() for p in body.rstrip(".").replace(" and ", ", ").split(",") if p.strip()]
    known = set(vocab)
    problems = []
    if items != list(ranked):
        problems.append("disagrees")
    if len(set(items)) != len(items):
        problems.append("repeats")
    if cut or (items and items[-1] not in known):
        problems.append("cut")
    return problems
