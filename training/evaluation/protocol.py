"""The evaluation protocol every model goes through: `evaluate(data, scorer, ...)` over the shared
candidates (or the full catalogue), with optional shuffled histories. Models enter only via `Scorer`;
`EvalConfig` holds the flags of `llmrec eval`."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from training.common.config import DeviceConfig
from training.common.errors import ConfigError
from training.common.flags import flag, required_flag
from training.evaluation.candidates import (
    NEGATIVES,
    STREAM_SHUFFLE,
    EvalProtocol,
    Split,
    load_candidates,
    seeded_rng,
    select_users,
)
from training.evaluation.metrics import compute_metrics, rank_targets

if TYPE_CHECKING:
    from training.data.dataset import PreparedData

logger = logging.getLogger(__name__)

FULL_BUDGET = 1 << 20  # candidate scores per batch in the full protocol: bounds (B, n_items) memory


@dataclass(frozen=True, kw_only=True)
class EvalConfig(DeviceConfig):
    """The flags of `llmrec eval`: the model to score (training.scorers.load_scorer) and how."""

    model: str = required_flag(
        "sasrec | llmsrec | llm-only | hybrid (LLM-SRec ckpt) | allmrec | allmrec-gen | popularity"
    )
    protocol: EvalProtocol = flag("1+99", "1+99 | 1+19 | full")
    split: Split = flag("test", "test | valid")
    shuffle: bool = flag(False, "Randomly permute every input history.")
    max_users: int = flag(10_000, "Evaluate at most this many users.")
    seed: int = flag(0, "Seed of the stored candidates and of the shuffle.")


@runtime_checkable
class Scorer(Protocol):
    def score(
        self,
        histories: list[np.ndarray],
        candidates: np.ndarray,
        timestamps: list[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """(B, C) float scores for candidate item ids (B, C) given each user's history."""
        ...


@runtime_checkable
class UserVectorScorer(Scorer, Protocol):
    def user_vectors(
        self, histories: list[np.ndarray], timestamps: list[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """(B, D) user vectors; lets `evaluate(shuffle=True)` report `shuffle_cosine`."""
        ...


def shuffle_histories(
    histories: list[np.ndarray], timestamps: list[np.ndarray | None], seed: int
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Each history permuted at random (seeded); its timestamps, if any, with the same permutation."""
    rng = seeded_rng(seed, STREAM_SHUFFLE)
    perms = [rng.permutation(len(h)) for h in histories]
    return (
        [h[p] for h, p in zip(histories, perms, strict=True)],
        [None if t is None else t[p] for t, p in zip(timestamps, perms, strict=True)],
    )


def evaluate(
    data: PreparedData,
    scorer: Scorer,
    protocol: EvalProtocol,
    split: Split = "test",
    seed: int = 0,
    max_users: int = 10_000,
    shuffle: bool = False,
    batch_size: int = 256,
    progress: bool = True,
) -> dict[str, float | int | str]:
    """Leave-one-out metrics of `scorer` on `split` (NDCG@10/20, HR@1/10/20, MRR, pessimistic ties)."""
    if protocol not in (*NEGATIVES, "full") or split not in ("valid", "test") or batch_size < 1:
        raise ConfigError(
            f"evaluate: protocol {protocol!r}, split {split!r} or batch_size {batch_size} invalid"
        )
    users = select_users(data.n_users, max_users, seed)
    histories = [data.split_input(int(u), split) for u in users]
    timestamps = [data.split_timestamps(int(u), split) for u in users]
    targets = np.array([data.split_target(int(u), split) for u in users], dtype=np.int64)
    fed_h, fed_t = shuffle_histories(histories, timestamps, seed) if shuffle else (histories, timestamps)
    if protocol == "full":
        ranks = _rank_full(data.n_items, scorer, fed_h, fed_t, targets, batch_size, progress)
    else:
        candidates = load_candidates(data, split, protocol, seed, users)
        ranks = _rank_sampled(scorer, fed_h, fed_t, candidates, batch_size, progress)
    result: dict[str, float | int | str] = {k: round(v, 6) for k, v in compute_metrics(ranks).items()}
    result |= {
        "protocol": protocol,
        "split": split,
        "n_users": int(users.size),
        "seed": seed,
        "shuffle": shuffle,
    }
    if shuffle and isinstance(scorer, UserVectorScorer):
        cosine = _shuffle_cosine(scorer, (histories, timestamps), (fed_h, fed_t), batch_size, progress)
        result["shuffle_cosine"] = round(cosine, 6)
    logger.info("evaluated %s", result)
    return result


def _batches(n: int, size: int, progress: bool, desc: str) -> Iterator[slice]:
    starts = range(0, n, size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress, leave=False):
        yield slice(start, min(start + size, n))


def _call_score(
    scorer: Scorer, histories: list[np.ndarray], candidates: np.ndarray, timestamps: list[np.ndarray | None]
) -> np.ndarray:
    scores = np.array(scorer.score(histories, candidates, timestamps), dtype=np.float64)  # own copy
    if scores.shape != candidates.shape:
        raise ValueError(f"scorer returned scores of shape {scores.shape} for candidates {candidates.shape}")
    return scores


def _rank_sampled(
    scorer: Scorer,
    histories: list[np.ndarray],
    timestamps: list[np.ndarray | None],
    candidates: np.ndarray,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    ranks = np.empty(len(histories), dtype=np.int64)
    for sl in _batches(len(histories), batch_size, progress, f"eval 1+{candidates.shape[1] - 1}"):
        ranks[sl] = rank_targets(_call_score(scorer, histories[sl], candidates[sl], timestamps[sl]), 0)
    return ranks


def _rank_full(
    n_items: int,
    scorer: Scorer,
    histories: list[np.ndarray],
    timestamps: list[np.ndarray | None],
    targets: np.ndarray,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """Every item 1..n_items is a candidate (the same row for all users); history items other than the
    target are masked to -inf, so re-recommending what the user already has neither helps nor hurts."""
    size = max(1, min(batch_size, FULL_BUDGET // n_items))
    items = np.arange(1, n_items + 1, dtype=np.int64)
    ranks = np.empty(len(histories), dtype=np.int64)
    for sl in _batches(len(histories), size, progress, "eval full"):
        batch = histories[sl]
        candidates = np.tile(items, (len(batch), 1))  # (B, n_items), writable for torch.from_numpy
        scores = _call_score(scorer, batch, candidates, timestamps[sl])
        rows = np.repeat(np.arange(len(batch)), [len(h) for h in batch])
        seen = np.concatenate(batch).astype(np.int64) if batch else rows
        mask = seen != targets[sl][rows]
        scores[rows[mask], seen[mask] - 1] = -np.inf
        ranks[sl] = rank_targets(scores, targets[sl] - 1)
    return ranks


def _shuffle_cosine(
    scorer: UserVectorScorer,
    original: tuple[list[np.ndarray], list[np.ndarray | None]],
    shuffled: tuple[list[np.ndarray], list[np.ndarray | None]],
    batch_size: int,
    progress: bool,
) -> float:
    """Mean cosine between each user's vector from the original and from the shuffled history."""
    total, n = 0.0, len(original[0])
    for sl in _batches(n, batch_size, progress, "shuffle cosine"):
        a = np.asarray(scorer.user_vectors(original[0][sl], original[1][sl]), dtype=np.float64)  # (B, D)
        b = np.asarray(scorer.user_vectors(shuffled[0][sl], shuffled[1][sl]), dtype=np.float64)  # (B, D)
        norms = np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
        total += float(((a * b).sum(axis=1) / norms).sum())
    return total / max(n, 1)
