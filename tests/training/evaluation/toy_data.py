"""Small hand-made PreparedData objects for the evaluation tests (built in memory, no reader involved)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data.dataset import Item, PreparedData


def make_data(
    root: Path,
    sequences: list[list[int]],
    n_items: int | None = None,
    timestamps: list[list[int] | None] | None = None,
) -> PreparedData:
    """A dataset over items 1..n_items (default: the largest id used) with the given user sequences."""
    n = n_items or max(max(s) for s in sequences)
    items = [Item(i, str(i), f"item {i}", None, ()) for i in range(1, n + 1)]
    stamps = timestamps or [None] * len(sequences)
    return PreparedData(
        root=root,
        name="toy",
        verb="watched",
        noun="item",
        genres=[],
        items=items,
        users=[f"u{u}" for u in range(len(sequences))],
        sequences=[np.asarray(s, dtype=np.int64) for s in sequences],
        timestamps=[None if t is None else np.asarray(t, dtype=np.int64) for t in stamps],
    )


def random_data(root: Path, n_users: int, n_items: int, seed: int = 0, max_len: int = 30) -> PreparedData:
    """Users with random distinct-item sequences of 3..max_len items, timestamps increasing."""
    rng = np.random.default_rng(seed)
    seqs = [
        rng.choice(np.arange(1, n_items + 1), size=int(rng.integers(3, max_len + 1)), replace=False).tolist()
        for _ in range(n_users)
    ]
    stamps: list[list[int] | None] = [list(range(1000, 1000 + len(s))) for s in seqs]
    return make_data(root, seqs, n_items, stamps)
