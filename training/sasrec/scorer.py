"""`SASRecScorer`: the evaluation Scorer protocol plus user vectors over variable-length histories, and
`pad_histories`, the right-aligned batch of ids SASRec reads. Knows no checkpoint files."""

from __future__ import annotations

import numpy as np
import torch

from models.sasrec import SASRec


def pad_histories(histories: list[np.ndarray], max_len: int) -> np.ndarray:
    """(B, T) int64 ids, right-aligned (left padding with 0), the most recent `max_len` items of each;
    T = the longest kept history (at least 1), since SASRec's output does not depend on left padding."""
    tails = [np.asarray(h, dtype=np.int64)[-max_len:] for h in histories]
    lengths = np.fromiter((len(t) for t in tails), dtype=np.int64, count=len(tails))
    width = max(int(lengths.max(initial=0)), 1)
    out = np.zeros((len(tails), width), dtype=np.int64)
    if lengths.sum():
        rows = np.repeat(np.arange(len(tails)), lengths)  # (N,) row of every kept item
        starts = np.cumsum(lengths) - lengths  # offset of each row's first item in the concatenation
        cols = width - lengths[rows] + (np.arange(len(rows)) - starts[rows])  # (N,)
        out[rows, cols] = np.concatenate(tails)
    return out


class SASRecScorer:
    """Scores candidates with a SASRec in eval mode. Histories: chronological item-id arrays of any length
    (the most recent max_len items are used); timestamps are accepted and ignored."""

    def __init__(
        self, model: SASRec, device: str | torch.device | None = None, batch_size: int = 256
    ) -> None:
        self.model = model.eval()
        self.device = torch.device(device) if device is not None else model.item_emb.weight.device
        self.batch_size = batch_size

    def _batches(self, n: int) -> range:
        return range(0, n, self.batch_size)

    def _seqs(self, histories: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(pad_histories(histories, self.model.config.max_len)).to(self.device)

    def score(
        self,
        histories: list[np.ndarray],
        candidates: np.ndarray,
        timestamps: list[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """(B, C) float32 scores of candidate ids (B, C) given each user's history."""
        return self.score_with_users(histories, candidates)[0]

    @torch.inference_mode()
    def score_with_users(
        self, histories: list[np.ndarray], candidates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """`score`'s (B, C) scores and `user_vectors`' (B, D) vectors from one forward."""
        candidates = np.asarray(candidates, dtype=np.int64)
        if candidates.shape[0] != len(histories):
            raise ValueError(f"{len(histories)} histories but candidates of shape {candidates.shape}")
        out = np.empty(candidates.shape, dtype=np.float32)
        users = np.empty((len(histories), self.model.config.hidden), dtype=np.float32)
        for b in self._batches(len(histories)):
            user = self.model.user_vector(self._seqs(histories[b : b + self.batch_size]))  # (b, D)
            items = torch.from_numpy(candidates[b : b + self.batch_size]).to(self.device)
            out[b : b + self.batch_size] = self._score(user, items).float().cpu().numpy()
            users[b : b + self.batch_size] = user.float().cpu().numpy()
        return out, users

    def _score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        if bool(
            (items == items[:1]).all()
        ):  # one shared list (full catalogue): a matmul, no (B, C, D) gather
            table = self.model.item_embeddings()[items[0]]  # (C, D)
            return users @ table.T  # (B, C)
        return self.model.score_users(users, items)

    @torch.inference_mode()
    def user_vectors(
        self, histories: list[np.ndarray], timestamps: list[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """(B, D) float32 user vectors (the last position's output)."""
        parts = [
            self.model.user_vector(self._seqs(histories[b : b + self.batch_size])).float().cpu().numpy()
            for b in self._batches(len(histories))
        ]
        return np.concatenate(parts) if parts else np.zeros((0, self.model.config.hidden), np.float32)
