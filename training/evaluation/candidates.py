"""Shared candidate sets: which users are evaluated, and their 1+99 / 1+19 negatives, drawn once per
(dataset, split, protocol, seed) and stored under `<root>/candidates/`. Knows nothing about models."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from training.common.errors import ConfigError, DataError

if TYPE_CHECKING:
    from training.data.dataset import PreparedData

logger = logging.getLogger(__name__)

Split = Literal["valid", "test"]
EvalProtocol = Literal["1+99", "1+19", "full"]
NEGATIVES = {"1+99": 99, "1+19": 19}
CHUNK_USERS = 10_000  # candidates are drawn per chunk of the seeded user order, so any max_users reuses them
DRAW_BUDGET = 2_000_000  # random draws held at once while sampling
STREAM_USERS, STREAM_CANDIDATES, STREAM_SHUFFLE = 0, 1, 2


def seeded_rng(seed: int, stream: int, *key: int) -> np.random.Generator:
    """Independent, reproducible Generator per purpose (user order, candidate chunk, shuffle)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream, *key)))


def user_order(n_users: int, seed: int) -> np.ndarray:
    """The seeded permutation of all users; every evaluated subset is a prefix of it."""
    return seeded_rng(seed, STREAM_USERS).permutation(n_users)


def select_users(n_users: int, max_users: int, seed: int) -> np.ndarray:
    """All users, or a seeded subset of `max_users` of them (nested across max_users), sorted."""
    if max_users < 1:
        raise ConfigError(f"max_users must be >= 1, got {max_users}")
    if n_users <= max_users:
        return np.arange(n_users, dtype=np.int64)
    return np.sort(user_order(n_users, seed)[:max_users]).astype(np.int64)


def candidates_path(root: Path, split: str, protocol: str, seed: int) -> Path:
    return Path(root) / "candidates" / f"{split}_{protocol}_seed{seed}.npz"


def _touched_keys(sequences: Sequence[np.ndarray], n_items: int) -> np.ndarray:
    """Sorted unique `row * (n_items + 1) + item` over every row's items: a vectorised membership set."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    rows = np.repeat(np.arange(len(sequences), dtype=np.int64), lengths)
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else rows
    keys = np.sort(rows * (n_items + 1) + items, kind="stable")  # np.unique is several times slower
    distinct = np.ones(keys.shape, dtype=bool)
    distinct[1:] = keys[1:] != keys[:-1]
    return keys[distinct]


def _contains(keys: np.ndarray, query: np.ndarray) -> np.ndarray:
    if keys.size == 0:
        return np.zeros(query.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return keys[pos] == query


def _draw_rows(
    rng: np.random.Generator,
    rows: np.ndarray,
    touched: np.ndarray,
    n_items: int,
    n_negatives: int,
    length: int,
) -> tuple[np.ndarray, np.ndarray]:
    """One rejection round: the first `n_negatives` distinct untouched items of `length` uniform draws.
    Returns (rows that got enough, their picks). Uniform over subsets by symmetry of untouched items."""
    draws = rng.integers(1, n_items + 1, size=(len(rows), length))  # (b, L)
    # sort (value, stream position) pairs packed in one int64: cheaper than a stable argsort
    ordered, order = np.divmod(np.sort(draws * length + np.arange(length), axis=1), length)  # (b, L) each
    usable = np.ones(draws.shape, dtype=bool)
    usable[:, 1:] = ordered[:, 1:] != ordered[:, :-1]  # first occurrence of each value in its row
    usable &= ~_contains(touched, rows[:, None] * (n_items + 1) + ordered)  # sorted queries: cache-friendly
    keep = np.empty_like(usable)
    np.put_along_axis(keep, order, usable, axis=1)  # back to stream order
    ok = keep.sum(axis=1) >= n_negatives
    keep &= np.cumsum(keep, axis=1) <= n_negatives
    return ok, draws[ok][keep[ok]].reshape(-1, n_negatives)


def _draw_lengths(available: np.ndarray, n_items: int, n_negatives: int) -> np.ndarray:
    """Draws needed to collect n_negatives distinct items out of `available` of n_items: mean + 4 sd
    (a sum of geometric waits) plus slack, so a retry is rare."""
    inv = np.concatenate([[0.0], 1.0 / np.arange(1, n_items + 1)])
    h1, h2 = np.cumsum(inv), np.cumsum(inv**2)
    a, low = available, available - n_negatives
    mean = n_items * (h1[a] - h1[low])
    var = n_items**2 * (h2[a] - h2[low]) - mean
    return np.ceil(mean + 4.0 * np.sqrt(np.maximum(var, 0.0))).astype(np.int64) + 8


def sample_negatives(
    sequences: Sequence[np.ndarray],
    n_items: int,
    n_negatives: int,
    rng: np.random.Generator,
    labels: Sequence[str] | None = None,
) -> np.ndarray:
    """(U, n_negatives) int64 distinct items in 1..n_items outside each row's sequence, uniformly drawn.
    Vectorised rejection sampling; rows that would need more draws than the catalogue go exact."""
    touched = _touched_keys(sequences, n_items)
    available = n_items - np.bincount(touched // (n_items + 1), minlength=len(sequences))
    short = np.flatnonzero(available < n_negatives)
    if short.size:
        row = int(short[0])
        who = labels[row] if labels is not None else f"row {row}"
        raise DataError(
            f"{who} touched {n_items - available[row]} of {n_items} items: fewer than the {n_negatives} "
            f"untouched items a 1+{n_negatives} candidate set needs ({short.size} such users)"
        )
    out = np.zeros((len(sequences), n_negatives), dtype=np.int64)
    lengths = _draw_lengths(available, n_items, n_negatives)
    hard = lengths > n_items
    for hard_row in np.flatnonzero(hard).tolist():
        allowed = np.ones(n_items + 1, dtype=bool)
        allowed[0] = False
        allowed[sequences[hard_row]] = False
        out[hard_row] = rng.choice(np.flatnonzero(allowed), n_negatives, replace=False)
    _draw_by_rejection(rng, np.flatnonzero(~hard), lengths, touched, n_items, out)
    return out


def _draw_by_rejection(
    rng: np.random.Generator,
    rows: np.ndarray,
    lengths: np.ndarray,
    touched: np.ndarray,
    n_items: int,
    out: np.ndarray,
) -> None:
    """Fill out[rows] in blocks of similar draw length, at most DRAW_BUDGET draws per block; a row whose
    round fell short retries with twice the draws."""
    rows = rows[np.argsort(lengths[rows], kind="stable")]
    start = 0
    while start < rows.size:
        guess = DRAW_BUDGET // lengths[rows[start]]
        size = max(1, DRAW_BUDGET // lengths[rows[min(start + guess, rows.size) - 1]])
        block = np.sort(rows[start : start + size])  # ascending rows: the membership queries come sorted
        length = int(lengths[block].max())
        while block.size:
            ok, picks = _draw_rows(rng, block, touched, n_items, out.shape[1], length)
            out[block[ok]] = picks
            block, length = block[~ok], length * 2
        start += size


def load_candidates(
    data: PreparedData, split: Split, protocol: EvalProtocol, seed: int, users: np.ndarray
) -> np.ndarray:
    """(len(users), 1 + negatives) int64 candidate ids, target in column 0, from the stored file; chunks
    of the seeded user order not yet stored are drawn (each with its own seeded Generator) and saved."""
    if protocol not in NEGATIVES:
        raise ConfigError(
            f"protocol {protocol!r} has no sampled candidates; choose one of {', '.join(NEGATIVES)}"
        )
    order = user_order(data.n_users, seed)
    position = np.empty_like(order)
    position[order] = np.arange(order.size)
    users = np.asarray(users, dtype=np.int64)
    needed = 0 if users.size == 0 else int(position[users].max()) + 1
    needed = min(data.n_users, math.ceil(needed / CHUNK_USERS) * CHUNK_USERS)
    path = candidates_path(data.root, split, protocol, seed)
    n_neg = NEGATIVES[protocol]
    if path.exists():
        stored = _read_candidates(path, data, split, order, n_neg)
    else:
        stored = np.zeros((0, 1 + n_neg), dtype=np.int32)
    if len(stored) < needed:
        chunks = range(len(stored) // CHUNK_USERS, math.ceil(needed / CHUNK_USERS))
        stored = np.concatenate([stored, *(_draw_chunk(data, split, order, seed, c, n_neg) for c in chunks)])
        _write_atomic(path, order[: len(stored)], stored)
        logger.info("stored %s candidates for %d users in %s", protocol, len(stored), path)
    return stored[position[users]].astype(np.int64)


def _draw_chunk(
    data: PreparedData, split: Split, order: np.ndarray, seed: int, chunk: int, n_neg: int
) -> np.ndarray:
    users = order[chunk * CHUNK_USERS : (chunk + 1) * CHUNK_USERS]
    rng = seeded_rng(seed, STREAM_CANDIDATES, chunk)
    labels = [f"{data.root}: user {data.users[u]!r} (index {u})" for u in users]
    negatives = sample_negatives([data.sequences[u] for u in users], data.n_items, n_neg, rng, labels)
    targets = np.array([data.split_target(int(u), split) for u in users], dtype=np.int64)
    return np.column_stack([targets, negatives]).astype(np.int32)


def _write_atomic(path: Path, users: np.ndarray, candidates: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(fh, users=users.astype(np.int32), candidates=candidates.astype(np.int32))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_candidates(
    path: Path, data: PreparedData, split: Split, order: np.ndarray, n_neg: int
) -> np.ndarray:
    """The stored (N, 1 + n_neg) candidates after checking they belong to this dataset, split and seed."""
    try:
        with np.load(path) as npz:
            users, cands = np.asarray(npz["users"], np.int64), np.asarray(npz["candidates"], np.int64)
    except (OSError, ValueError, KeyError) as err:
        raise DataError(f"{path}: unreadable candidate file ({err}); delete it to redraw") from err
    redraw = "was drawn for other data, split or seed; delete it to redraw"
    if users.ndim != 1 or cands.shape != (users.size, 1 + n_neg):
        raise DataError(
            f"{path}: candidates of shape {cands.shape} for {users.size} users, expected "
            f"({users.size}, {1 + n_neg}) for 1+{n_neg}; {redraw}"
        )
    whole = users.size == data.n_users or (users.size % CHUNK_USERS == 0 and users.size < data.n_users)
    if not whole or not np.array_equal(users, order[: users.size]):
        raise DataError(f"{path}: its {users.size} users are not this dataset's seeded user order; {redraw}")
    targets = np.array([data.split_target(int(u), split) for u in users], dtype=np.int64)
    if not np.array_equal(cands[:, 0], targets):
        raise DataError(f"{path}: column 0 differs from the {split} targets; {redraw}")
    _check_negatives(path, data, users, cands[:, 1:])
    return cands.astype(np.int32)


def _check_negatives(path: Path, data: PreparedData, users: np.ndarray, negatives: np.ndarray) -> None:
    if negatives.size and (negatives.min() < 1 or negatives.max() > data.n_items):
        raise DataError(f"{path}: negative item ids outside 1..{data.n_items}; delete it to redraw")
    touched = _touched_keys([data.sequences[u] for u in users], data.n_items)
    rows = np.arange(users.size, dtype=np.int64)[:, None]
    if _contains(touched, rows * (data.n_items + 1) + negatives).any():
        raise DataError(f"{path}: a negative is an item its user touched; delete it to redraw")
    ordered = np.sort(negatives, axis=1)
    if (ordered[:, 1:] == ordered[:, :-1]).any():
        raise DataError(f"{path}: duplicate negatives in a candidate row; delete it to redraw")
