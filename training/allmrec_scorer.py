"""A-LLMRec scorers for the shared evaluation. `likelihood`: every candidate scored by the LLM's
log-likelihood of its title after the prompt (a full ranking). `generate`: greedy generation matched back to
one candidate (exact, then normalised title); its score row is one-hot, all zero when nothing matched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from models.allmrec_encoder import ALLMRecEncoder, match_candidate, prompt_order
from training.allmrec_checkpoint import load_allmrec_encoder
from training.data.dataset import PreparedData
from training.errors import ConfigError
from training.evaluation import compute_metrics, load_candidates, rank_targets

log = logging.getLogger(__name__)

ScoreMode = Literal["likelihood", "generate"]


class ALLMRecScorer:
    """Scorer over an ALLMRecEncoder; `length_norm` ranks by mean instead of summed token log-prob.
    Likelihoods are memoised per (history tail, candidate row), so re-scoring with another `length_norm`
    costs nothing. `extra_metrics()` reports generation counts (no-match rate)."""

    def __init__(
        self,
        encoder: ALLMRecEncoder,
        mode: ScoreMode = "likelihood",
        batch_size: int = 4,
        seed: int = 0,
        length_norm: bool = False,
        progress: bool = False,
    ) -> None:
        if mode not in ("likelihood", "generate"):
            raise ConfigError(f"A-LLMRec score mode must be likelihood or generate, got {mode!r}")
        self.encoder, self.mode, self.batch_size, self.seed = encoder, mode, batch_size, seed
        self.length_norm, self.progress = length_norm, progress
        self._cache: dict[tuple[tuple[int, ...], tuple[int, ...]], np.ndarray] = {}
        self.generated = 0
        self.no_match = 0

    def _key(self, history: np.ndarray, candidates: np.ndarray) -> tuple[tuple[int, ...], tuple[int, ...]]:
        tail = max(self.encoder.sasrec.config.max_len, self.encoder.prompt.history_len)
        return tuple(int(i) for i in history[-tail:]), tuple(int(c) for c in candidates)

    def score(
        self,
        histories: Sequence[np.ndarray],
        candidates: np.ndarray,
        timestamps: Sequence[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """(B, C) scores in the candidates' column order (timestamps are not part of the prompt)."""
        candidates = np.asarray(candidates)
        orders = [prompt_order(row, self.seed) for row in candidates]
        shown = [row[o] for row, o in zip(candidates, orders, strict=True)]  # prompt order
        scores = (
            self._generate(histories, shown)
            if self.mode == "generate"
            else self._likelihood(histories, shown)
        )
        out = np.empty(candidates.shape, dtype=np.float64)
        for b, order in enumerate(orders):
            out[b, order] = scores[b]
        return out

    def _likelihood(self, histories: Sequence[np.ndarray], shown: list[np.ndarray]) -> list[np.ndarray]:
        keys = [self._key(np.asarray(h), c) for h, c in zip(histories, shown, strict=True)]
        todo = [b for b, key in enumerate(keys) if key not in self._cache]
        with torch.inference_mode():
            for start in self._steps(len(todo), "A-LLMRec likelihood"):
                rows = todo[start : start + self.batch_size]
                sums, counts = self.encoder.candidate_logprobs(
                    [histories[b] for b in rows], [shown[b] for b in rows]
                )
                pairs = torch.stack([sums, counts.to(sums.dtype)], -1).cpu().numpy()  # (B, C, 2)
                for b, pair in zip(rows, pairs, strict=True):
                    self._cache[keys[b]] = pair
        found = [self._cache[key] for key in keys]
        return [p[:, 0] / p[:, 1] if self.length_norm else p[:, 0] for p in found]

    def _generate(self, histories: Sequence[np.ndarray], shown: list[np.ndarray]) -> list[np.ndarray]:
        result = []
        with torch.inference_mode():
            for start in self._steps(len(shown), "A-LLMRec generation"):
                hist, cands = (
                    histories[start : start + self.batch_size],
                    shown[start : start + self.batch_size],
                )
                for text, row in zip(self.encoder.generate(hist, cands), cands, strict=True):
                    one_hot = np.zeros(len(row))
                    hit = match_candidate(text, [self.encoder.title(int(c)) for c in row])
                    if hit is None:
                        self.no_match += 1
                    else:
                        one_hot[hit] = 1.0
                    self.generated += 1
                    result.append(one_hot)
        return result

    def _steps(self, n: int, desc: str) -> Any:
        """Batch starts, with a progress bar (prompts are slow: seconds each on a CPU)."""
        steps = range(0, n, self.batch_size)
        return tqdm(steps, desc=desc, unit="batch", leave=False, disable=not self.progress or n == 0)

    def extra_metrics(self) -> dict[str, float | int]:
        """Generation counts since creation (empty for the likelihood mode)."""
        if self.mode != "generate":
            return {}
        rate = self.no_match / self.generated if self.generated else 0.0
        return {
            "gen_no_match_rate": round(rate, 6),
            "gen_no_match": self.no_match,
            "generated": self.generated,
        }


def evaluate_users(
    data: PreparedData,
    scorer: ALLMRecScorer | object,
    users: np.ndarray,
    protocol: Literal["1+99", "1+19"] = "1+19",
    split: Literal["valid", "test"] = "test",
    seed: int = 0,
    batch_size: int = 16,
) -> dict[str, float | int | str]:
    """Metrics on an explicit user subset (e.g. users whose target is cold) with the shared stored
    candidates and the shared metric code; the positive is column 0, ties rank pessimistically."""
    users = np.asarray(users, dtype=np.int64)
    if users.size == 0:
        raise ConfigError("evaluate_users: no users to evaluate")
    candidates = load_candidates(data, split, protocol, seed, users)
    ranks = np.empty(len(users), dtype=np.int64)
    for start in range(0, len(users), batch_size):
        sl = slice(start, start + batch_size)
        hist = [data.split_input(int(u), split) for u in users[sl]]
        stamps = [data.split_timestamps(int(u), split) for u in users[sl]]
        scores = np.asarray(scorer.score(hist, candidates[sl], stamps), dtype=np.float64)  # type: ignore[attr-defined]
        ranks[sl] = rank_targets(scores, 0)
    metrics: dict[str, float | int | str] = {k: round(v, 6) for k, v in compute_metrics(ranks).items()}
    return metrics | {"protocol": protocol, "split": split, "n_users": int(users.size), "seed": seed}


def load_allmrec_scorer(
    ckpt: Path, data: PreparedData, device: str = "cpu", mode: ScoreMode = "likelihood", batch_size: int = 4
) -> ALLMRecScorer:
    """Stage-2 checkpoint + dataset → scorer (refuses a checkpoint of another dataset)."""
    encoder, _ = load_allmrec_encoder(Path(ckpt), data, device)
    return ALLMRecScorer(encoder, mode, batch_size, progress=True)
