"""A-LLMRec scorers for the shared evaluation. `likelihood`: every candidate scored by the LLM's
log-likelihood of its title after the prompt, calibrated as the checkpoint's `scoring` says (summed, per
token, minus the prior prompt's, blended with SASRec: models/allmrec_scoring.py); a full ranking.
`generate`: greedy generation matched back to one candidate (exact, then normalised title); its score row
is one-hot, all zero when nothing matched.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from models.allmrec_encoder import ALLMRecEncoder, match_candidate, prompt_order
from models.allmrec_scoring import ALLMRecScoring, blend, llm_scores
from training.allmrec.checkpoint import load_allmrec_encoder
from training.common.errors import ConfigError
from training.data.dataset import PreparedData
from training.evaluation.candidates import load_candidates
from training.evaluation.metrics import compute_metrics, rank_targets
from training.sasrec.scorer import SASRecScorer

log = logging.getLogger(__name__)

ScoreMode = Literal["likelihood", "generate"]


@dataclass
class RawScores:
    """One prompt's numbers in the candidates' column order: summed title log-likelihoods, token counts,
    and the prior prompt's sums (None when not computed)."""

    sums: np.ndarray
    counts: np.ndarray
    prior: np.ndarray | None = None


class ALLMRecScorer:
    """Scorer over an ALLMRecEncoder, scoring as `scoring` says. Log-likelihoods are memoised per (history
    tail, candidate row), so re-scoring with another `scoring` costs only what it adds (the prior prompt).
    `extra_metrics()` reports generation counts (no-match rate)."""

    def __init__(
        self,
        encoder: ALLMRecEncoder,
        mode: ScoreMode = "likelihood",
        batch_size: int = 4,
        seed: int = 0,
        scoring: ALLMRecScoring | None = None,
        progress: bool = False,
    ) -> None:
        if mode not in ("likelihood", "generate"):
            raise ConfigError(f"A-LLMRec score mode must be likelihood or generate, got {mode!r}")
        self.encoder, self.mode, self.batch_size, self.seed = encoder, mode, batch_size, seed
        self.scoring, self.progress = scoring or ALLMRecScoring(), progress
        self.sasrec = SASRecScorer(encoder.sasrec)
        self._cache: dict[tuple[tuple[int, ...], tuple[int, ...]], RawScores] = {}
        self._imputed: np.ndarray | None = None  # stage 1's text-predicted CF table, once needed
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
        if self.mode == "generate":
            return self._generate(histories, candidates)
        raw = self.raw(histories, candidates, prior=self.scoring.needs_prior)
        return self.calibrated(raw, histories, candidates, self.scoring)

    def calibrated(
        self,
        raw: Sequence[RawScores],
        histories: Sequence[np.ndarray],
        candidates: np.ndarray,
        scoring: ALLMRecScoring,
    ) -> np.ndarray:
        """(B, C) scores of `raw` under `scoring` (SASRec's scores added when it blends)."""
        sums, counts = np.stack([r.sums for r in raw]), np.stack([r.counts for r in raw])
        prior = np.stack([r.prior for r in raw]) if scoring.needs_prior else None  # type: ignore[misc]
        llm = llm_scores(sums, counts, prior, scoring.mode)
        if not scoring.needs_sasrec:
            return blend(llm, None, scoring)
        sasrec, cold, imputed = self.sasrec_side(histories, candidates)
        return blend(llm, sasrec, scoring, cold, imputed)

    def sasrec_side(
        self, histories: Sequence[np.ndarray], candidates: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """What a blend reads from SASRec, each (B, C): its scores of the candidates, which of them are cold,
        and (None when none is) its user vector against stage 1's text-predicted embedding of each."""
        candidates = np.asarray(candidates, dtype=np.int64)
        stage1 = self.encoder.stage1
        cold = stage1.cold.cpu().numpy()[candidates]
        if not cold.any():
            return self.sasrec.score(list(histories), candidates), cold, None
        if self._imputed is None:
            self._imputed = stage1.imputed_table().float().cpu().numpy()  # (n + 1, d_cf)
        sasrec, users = self.sasrec.score_with_users(list(histories), candidates)  # one SASRec forward
        return sasrec, cold, np.einsum("bd,bcd->bc", users, self._imputed[candidates])

    def raw(self, histories: Sequence[np.ndarray], candidates: np.ndarray, prior: bool) -> list[RawScores]:
        """Per row, the log-likelihood sums and counts (and prior sums when `prior`), column order. The
        prompt lists the candidates in a seeded order of the set (`prompt_order`), as in training."""
        orders, shown = self._prompt_order(candidates)
        keys = [self._key(np.asarray(h), c) for h, c in zip(histories, shown, strict=True)]
        todo = [b for b, key in enumerate(keys) if key not in self._cache]
        self._fill(todo, histories, shown, keys, prior=False)
        if prior:
            todo = [b for b, key in enumerate(keys) if self._cache[key].prior is None]
            self._fill(todo, histories, shown, keys, prior=True)
        out = []
        for key, order in zip(keys, orders, strict=True):
            found = self._cache[key]
            inverse = np.argsort(order)  # prompt order → column order
            out.append(
                RawScores(
                    found.sums[inverse],
                    found.counts[inverse],
                    None if found.prior is None else found.prior[inverse],
                )
            )
        return out

    def _fill(
        self,
        todo: list[int],
        histories: Sequence[np.ndarray],
        shown: list[np.ndarray],
        keys: list[tuple[tuple[int, ...], tuple[int, ...]]],
        prior: bool,
    ) -> None:
        """Memoise the `todo` rows' sums and counts, or (prior) their prior prompt's sums."""
        with torch.inference_mode():
            for start in self._steps(len(todo), "A-LLMRec likelihood"):
                rows = todo[start : start + self.batch_size]
                cands = [shown[b] for b in rows]
                if prior:
                    for b, (sums, _) in zip(rows, self.encoder.prior_rows(cands), strict=True):
                        self._cache[keys[b]].prior = sums.float().cpu().numpy()
                    continue
                scored = self.encoder.candidate_rows([histories[b] for b in rows], cands)
                for b, (sums, counts) in zip(rows, scored, strict=True):
                    self._cache[keys[b]] = RawScores(sums.float().cpu().numpy(), counts.float().cpu().numpy())

    def _prompt_order(self, candidates: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per row, the column order the prompt lists the candidates in (a seeded order of the set, as in
        training) and the candidates in that order."""
        orders = [prompt_order(row, self.seed) for row in np.asarray(candidates)]
        return orders, [row[o] for row, o in zip(candidates, orders, strict=True)]

    def _generate(self, histories: Sequence[np.ndarray], candidates: np.ndarray) -> np.ndarray:
        orders, shown = self._prompt_order(candidates)
        out = np.zeros(candidates.shape, dtype=np.float64)
        with torch.inference_mode():
            for start in self._steps(len(shown), "A-LLMRec generation"):
                hist, cands = (
                    histories[start : start + self.batch_size],
                    shown[start : start + self.batch_size],
                )
                texts = self.encoder.generate(hist, cands)
                for b, (text, row) in enumerate(zip(texts, cands, strict=True)):
                    hit = match_candidate(text, [self.encoder.title(int(c)) for c in row])
                    self.generated += 1
                    if hit is None:
                        self.no_match += 1
                    else:
                        out[start + b, orders[start + b][hit]] = 1.0
        return out

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
    """Stage-2 checkpoint + dataset → scorer with the checkpoint's calibrated scoring (refuses a checkpoint
    of another dataset)."""
    encoder, config = load_allmrec_encoder(Path(ckpt), data, device)
    return ALLMRecScorer(encoder, mode, batch_size, scoring=scoring_of(config), progress=True)


def scoring_of(config: dict[str, Any]) -> ALLMRecScoring:
    """The `scoring` a stage-2 config records (the paper's summed likelihood for older checkpoints)."""
    raw = config.get("scoring") or {}
    try:
        return ALLMRecScoring(**raw)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"stage-2 config: invalid scoring {raw!r}: {err}") from None
