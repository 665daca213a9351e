"""The hybrid of LLM-SRec and SASRec (ours, beyond the papers): one weight chosen on validation blends the
two models' raw dot-product scores, each divided by a fixed scale so that the weight is comparable across
bundles. Because both scores are dot products, the blend is itself one dot product of concatenated vectors,
so the same FAISS index serves it. Pure numpy/torch-free arithmetic; knows no training or serving code.

score(u, i) = weight * (u_llm · i_llm) / scale_llmsrec + (1 - weight) * (u_sas · i_sas) / scale_sasrec
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class HybridConfig:
    """weight = share of LLM-SRec (0 = SASRec only, 1 = LLM-SRec only); scales > 0 (the std of each
    model's validation scores), recorded at training and carried by the bundle."""

    weight: float
    scale_llmsrec: float
    scale_sasrec: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"hybrid weight must be in [0, 1], got {self.weight}")
        if self.scale_llmsrec <= 0 or self.scale_sasrec <= 0:
            raise ValueError(f"hybrid scales must be > 0, got {self.scale_llmsrec}, {self.scale_sasrec}")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> HybridConfig:
        return cls(float(raw["weight"]), float(raw["scale_llmsrec"]), float(raw["scale_sasrec"]))

    def to_dict(self) -> dict[str, float]:
        return {"weight": self.weight, "scale_llmsrec": self.scale_llmsrec, "scale_sasrec": self.scale_sasrec}

    @property
    def llm_factor(self) -> float:
        return self.weight / self.scale_llmsrec

    @property
    def sasrec_factor(self) -> float:
        return (1.0 - self.weight) / self.scale_sasrec


def hybrid_user_vectors(llm_users: np.ndarray, sasrec_users: np.ndarray, config: HybridConfig) -> np.ndarray:
    """(B, D_llm), (B, D_cf) → (B, D_llm + D_cf): both user vectors, each scaled by its factor."""
    return np.concatenate(
        [llm_users * config.llm_factor, sasrec_users * config.sasrec_factor], axis=-1
    ).astype(np.float32)


def hybrid_item_table(llm_items: np.ndarray, sasrec_items: np.ndarray) -> np.ndarray:
    """(N, D_llm), (N, D_cf) → (N, D_llm + D_cf): unscaled, so one table serves every weight."""
    if llm_items.shape[0] != sasrec_items.shape[0]:
        raise ValueError(f"item tables differ in rows: {llm_items.shape[0]} vs {sasrec_items.shape[0]}")
    return np.concatenate([llm_items, sasrec_items], axis=-1).astype(np.float32)


def hybrid_scores(llm_scores: np.ndarray, sasrec_scores: np.ndarray, config: HybridConfig) -> np.ndarray:
    """The blend of already computed scores (same shape): what the concatenated dot product equals."""
    return config.llm_factor * llm_scores + config.sasrec_factor * sasrec_scores
