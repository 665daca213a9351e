"""A-LLMRec candidate scores, calibrated. The paper ranks candidates by the summed log-likelihood of their
titles after the prompt; that sum carries each title's own prior (short, common titles win whatever the
user). The alternatives, all from the same two forwards:

- `sum`: the paper's summed title log-likelihood;
- `mean`: per-token mean (long titles no longer lose for their length);
- `pmi`: summed log-likelihood minus the same title's under the *prior* prompt, the candidate clause alone
  without the user token and history (pointwise mutual information between user and title);
- `pmi-mean`: the same per token;

and, on top of any of them, a blend with SASRec's score of the candidate: each side divided by the typical
within-row spread of its validation scores, then (1 - w) · LLM + w · SASRec. A cold candidate (no trained
SASRec row) gets, as its SASRec score, either the row's warm mean (neutral: only the LLM places it) or —
`cold_offset` set — SASRec's user vector against the CF embedding stage 1 predicts from its text
(`ALLMRecStage1.imputed_cf`) plus `cold_offset` spreads: text-predicted embeddings score higher than trained
ones for everyone, and the offset, chosen on validation, puts them back on the warm items' scale. Mode,
weight, scales and offset are chosen on validation and recorded in the checkpoint and bundle. The genre
answer is blended the same way: the LLM's genre scores with the history's own genre shares (`GenreBlend`).
Numpy in, numpy out (`mode_scores` also takes tensors).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

SCORE_MODES = ("sum", "mean", "pmi", "pmi-mean")
PRIOR_MODES = ("pmi", "pmi-mean")  # modes that need the prior prompt's forward


@dataclass(frozen=True)
class ALLMRecScoring:
    """How A-LLMRec turns title log-likelihoods into candidate scores (see the module docstring)."""

    mode: str = "sum"
    sasrec_weight: float = 0.0  # 0 = the LLM alone
    llm_scale: float = 1.0  # typical within-row std of the LLM scores on validation
    sasrec_scale: float = 1.0  # same for SASRec's scores
    cold_offset: float | None = None  # None: cold candidates neutral; else text-imputed + offset · scale

    def __post_init__(self) -> None:
        if self.mode not in SCORE_MODES:
            raise ValueError(f"unknown A-LLMRec score mode {self.mode!r} (choose {', '.join(SCORE_MODES)})")
        if not 0.0 <= self.sasrec_weight < 1.0:
            raise ValueError(f"sasrec_weight must be in [0, 1), got {self.sasrec_weight}")
        if self.llm_scale <= 0 or self.sasrec_scale <= 0:
            raise ValueError(f"scales must be > 0, got {self.llm_scale}, {self.sasrec_scale}")
        if self.cold_offset is not None and not np.isfinite(self.cold_offset):
            raise ValueError(f"cold_offset must be finite or None, got {self.cold_offset}")

    @property
    def needs_prior(self) -> bool:
        return self.mode in PRIOR_MODES

    @property
    def needs_sasrec(self) -> bool:
        return self.sasrec_weight > 0


def mode_scores(sums: ArrayT, counts: ArrayT, prior_sums: ArrayT | None, mode: str) -> ArrayT:
    """(B, C) title log-likelihood sums, token counts and (for the PMI modes) prior sums → scores in
    `mode`, arithmetic only, so numpy arrays and torch tensors (training's ranking loss) alike."""
    if mode not in SCORE_MODES:
        raise ValueError(f"unknown A-LLMRec score mode {mode!r}")
    if mode in PRIOR_MODES:
        if prior_sums is None:
            raise ValueError(f"score mode {mode!r} needs the prior prompt's log-likelihoods")
        sums = sums - prior_sums
    return sums / counts if mode.endswith("mean") else sums


def llm_scores(sums: np.ndarray, counts: np.ndarray, prior_sums: np.ndarray | None, mode: str) -> np.ndarray:
    """mode_scores in float64 numpy."""
    prior = None if prior_sums is None else np.asarray(prior_sums, np.float64)
    return mode_scores(np.asarray(sums, np.float64), np.asarray(counts, np.float64), prior, mode)


def blend(
    llm: np.ndarray,
    sasrec: np.ndarray | None,
    scoring: ALLMRecScoring,
    cold: np.ndarray | None = None,
    imputed: np.ndarray | None = None,
) -> np.ndarray:
    """(B, C) LLM scores (already in `scoring.mode`) and SASRec's → the served scores. `cold` (B, C) marks
    candidates SASRec never trained: their SASRec score says nothing. With `scoring.cold_offset` None it is
    replaced by the mean of the row's warm candidates (neutral) and only the LLM places them; else by
    `imputed` (B, C) — SASRec's user vector · stage 1's text-predicted embedding — plus the offset."""
    llm = np.asarray(llm, np.float64)
    if not scoring.needs_sasrec:
        return llm
    if sasrec is None:
        raise ValueError("this A-LLMRec scoring blends with SASRec: SASRec's candidate scores are needed")
    sasrec = np.asarray(sasrec, np.float64)
    if cold is not None and np.asarray(cold).any():
        sasrec = cold_sasrec_scores(sasrec, np.asarray(cold, bool), imputed, scoring)
    w = scoring.sasrec_weight
    return (1 - w) * llm / scoring.llm_scale + w * sasrec / scoring.sasrec_scale


def cold_sasrec_scores(
    sasrec: np.ndarray, cold: np.ndarray, imputed: np.ndarray | None, scoring: ALLMRecScoring
) -> np.ndarray:
    """(B, C) SASRec scores with the cold candidates' replaced as `blend` says."""
    if scoring.cold_offset is None:
        warm = np.where(cold, np.nan, sasrec)
        neutral = np.nan_to_num(np.nanmean(np.where(cold.all(1, keepdims=True), 0.0, warm), axis=1))
        return np.where(cold, neutral[:, None], sasrec)
    if imputed is None:
        raise ValueError("this A-LLMRec scoring scores cold candidates from text: imputed scores are needed")
    shifted = np.asarray(imputed, np.float64) + scoring.cold_offset * scoring.sasrec_scale
    return np.where(cold, shifted, sasrec)


def row_spread(scores: np.ndarray) -> float:
    """Mean within-row standard deviation of (B, C) scores (the scale that matters for ranking); 1 if 0."""
    spread = float(np.nanmean(np.nanstd(np.asarray(scores, np.float64), axis=1)))
    return spread if np.isfinite(spread) and spread > 0 else 1.0


@dataclass(frozen=True)
class GenreBlend:
    """How the served genre ranking combines the LLM's evidence with the history's own genre shares:
    (1 - w) · LLM / llm_scale + w · share / history_scale (scales: typical within-row spread on validation).
    Chosen on validation; w = 0 is the LLM alone."""

    history_weight: float = 0.0
    llm_scale: float = 1.0
    history_scale: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.history_weight < 1.0:
            raise ValueError(f"history_weight must be in [0, 1), got {self.history_weight}")
        if self.llm_scale <= 0 or self.history_scale <= 0:
            raise ValueError(f"scales must be > 0, got {self.llm_scale}, {self.history_scale}")


def history_genre_shares(histories: Sequence[Sequence[int]], matrix: np.ndarray) -> np.ndarray:
    """(B, G) share of each history's items that carry each genre (matrix: (n_items + 1, G) 0/1)."""
    rows = []
    for history in histories:
        items = np.asarray(history, dtype=np.int64)
        rows.append(matrix[items].sum(0) / max(len(items), 1))
    return np.stack(rows).astype(np.float64)


def blend_genre_scores(llm: np.ndarray, shares: np.ndarray, blend: GenreBlend) -> np.ndarray:
    """(B, G) LLM genre scores and history shares → the served genre scores (higher = likelier)."""
    w = blend.history_weight
    return (1 - w) * np.asarray(llm, np.float64) / blend.llm_scale + w * np.asarray(
        shares, np.float64
    ) / blend.history_scale
