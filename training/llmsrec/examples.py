"""LLM-SRec training examples of the paper's recipe: one per user (input s[:-3] of the train sequence, target
s[-3], the whole train sequence as `seen`), and the sampled negatives no example may see."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.common.errors import ConfigError
from training.data.dataset import PreparedData, seeded_subset


@dataclass
class Example:
    history: np.ndarray  # item ids, chronological
    timestamps: np.ndarray | None
    target: int
    seen: frozenset[int]  # every item of the user's train sequence: never a negative


def training_examples(data: PreparedData, max_users: int, seed: int) -> list[Example]:
    """One example per user: train sequence s[:-2] → input s[:-3], target s[-3]."""
    users = seeded_subset(np.arange(data.n_users), max_users, seed)
    examples = []
    for u in users:
        train = np.asarray(data.sequences[u][:-2])
        ts = data.timestamps[u]
        if len(train) >= 2:
            t = None if ts is None else np.asarray(ts[: len(train) - 1])
            examples.append(Example(train[:-1], t, int(train[-1]), frozenset(int(i) for i in train)))
    if not examples:
        raise ConfigError(f"dataset {data.name!r}: no user has a train sequence of 2+ items")
    return examples


def sample_negatives(rng: np.random.Generator, n_items: int, seen: frozenset[int], k: int) -> list[int]:
    """k distinct items from 1..n_items outside `seen` (rejection sampling)."""
    if n_items - len(seen) < k:
        raise ConfigError(f"only {n_items - len(seen)} items are available as negatives, {k} needed")
    chosen: list[int] = []
    while len(chosen) < k:
        item = int(rng.integers(1, n_items + 1))
        if item not in seen and item not in chosen:
            chosen.append(item)
    return chosen
