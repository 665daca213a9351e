"""The hybrid of LLM-SRec and SASRec on the training side: its weight (models/hybrid.py) chosen on
validation only (both models' scores on the shared `1+99` validation candidates, each divided by its
standard deviation, blended on a grid of weights; the best NDCG@10 wins, ties keep the smaller LLM-SRec
share), and its scorer for the shared evaluation."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models.hybrid import HybridConfig, hybrid_scores
from training.common.errors import CheckpointError
from training.data.dataset import PreparedData
from training.evaluation.candidates import load_candidates, select_users
from training.evaluation.metrics import compute_metrics, rank_targets
from training.llmsrec.scorer import LLMSRecScorer, load_llmsrec_scorer
from training.sasrec.checkpoint import load_sasrec
from training.sasrec.scorer import SASRecScorer

WEIGHT_GRID = tuple(round(float(w), 2) for w in np.linspace(0.0, 1.0, 21))


@dataclass(frozen=True)
class ValidationSet:
    """The validation users (seeded order of the evaluation protocol), their inputs and 1+99 candidates."""

    users: np.ndarray  # (U,)
    histories: list[np.ndarray]
    timestamps: list[np.ndarray | None]
    candidates: np.ndarray  # (U, 100), the target in column 0
    seed: int

    @classmethod
    def load(cls, data: PreparedData, max_users: int, seed: int) -> ValidationSet:
        users = select_users(data.n_users, max_users, seed)
        return cls(
            users,
            [data.split_input(int(u), "valid") for u in users],
            [data.split_timestamps(int(u), "valid") for u in users],
            load_candidates(data, "valid", "1+99", seed, users),
            seed,
        )

    def metrics(self, scores: np.ndarray) -> dict[str, Any]:
        """Metrics of (U, 100) scores, in the shape `training.evaluation.evaluate` reports them."""
        found = {k: round(v, 6) for k, v in compute_metrics(rank_targets(scores)).items()}
        return found | {
            "protocol": "1+99",
            "split": "valid",
            "n_users": len(self.users),
            "seed": self.seed,
            "shuffle": False,
        }


def sasrec_valid_scores(scorer: SASRecScorer, valid: ValidationSet) -> np.ndarray:
    """(U, 100) SASRec scores of the validation candidates."""
    return np.asarray(scorer.score(valid.histories, valid.candidates, valid.timestamps), dtype=np.float64)


class HybridScorer:
    """The hybrid on the evaluation protocol: both models' scores blended by the recorded config. The
    LLM-SRec scorer memoises user vectors, so a shuffle test or a second metric reuses them."""

    def __init__(self, llm: LLMSRecScorer, sasrec: SASRecScorer, config: HybridConfig) -> None:
        self.llm, self.sasrec, self.config = llm, sasrec, config

    def score(
        self,
        histories: list[np.ndarray],
        candidates: np.ndarray,
        timestamps: list[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        llm = self.llm.score(histories, candidates, timestamps)
        return hybrid_scores(llm, self.sasrec.score(histories, candidates), self.config)


def load_hybrid_scorer(ckpt: Path, data: PreparedData, device: str = "cpu") -> HybridScorer:
    """An LLM-SRec checkpoint with a `hybrid` record + the SASRec it was distilled from (its sasrec_dir)."""
    path = Path(ckpt) / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    if "hybrid" not in config:
        raise CheckpointError(
            f"{ckpt}: no hybrid record (train it with llmrec train llmsrec --recipe cached)"
        )
    sasrec = SASRecScorer(load_sasrec(Path(config["sasrec_dir"]), device=device), device=device)
    llm = load_llmsrec_scorer(ckpt, data, device=device, expect_variant="llmsrec")
    return HybridScorer(llm, sasrec, HybridConfig.from_dict(config["hybrid"]))


def fit_hybrid(
    llm_scores: np.ndarray, sasrec_scores: np.ndarray, valid: ValidationSet
) -> tuple[HybridConfig, dict[str, Any]]:
    """The weight of the best validation NDCG@10 and the hybrid's validation metrics (with every
    weight's NDCG@10 under 'grid'). Scales: the std of each model's validation scores."""
    if llm_scores.shape != sasrec_scores.shape or llm_scores.shape != valid.candidates.shape:
        raise ValueError(
            f"score shapes differ: {llm_scores.shape}, {sasrec_scores.shape}, {valid.candidates.shape}"
        )
    scales = [max(float(np.std(s)), 1e-12) for s in (llm_scores, sasrec_scores)]
    best: tuple[float, HybridConfig, dict[str, Any]] | None = None
    grid = {}
    for weight in WEIGHT_GRID:
        config = HybridConfig(weight, *scales)
        metrics = valid.metrics(hybrid_scores(llm_scores, sasrec_scores, config))
        grid[f"{weight:.2f}"] = metrics["ndcg@10"]
        if best is None or metrics["ndcg@10"] > best[0]:
            best = (metrics["ndcg@10"], config, metrics)
    assert best is not None
    return best[1], best[2] | {"grid": grid}
