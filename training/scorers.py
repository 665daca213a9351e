"""Which scorer evaluates which model name: a small registry with lazy imports."""

from __future__ import annotations

from pathlib import Path

from training.common.device import resolve_device
from training.common.errors import ConfigError
from training.data.dataset import PreparedData
from training.evaluation.protocol import Scorer

MODEL_NAMES = ("sasrec", "llmsrec", "llm-only", "hybrid", "allmrec", "allmrec-gen", "popularity")


def load_scorer(model: str, ckpt: Path | None, data: PreparedData, device: str = "auto") -> Scorer:
    """Build the scorer for `model` from its checkpoint directory."""
    if model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
    if model == "popularity":
        from training.evaluation.popularity import PopularityScorer

        return PopularityScorer(data)
    if ckpt is None:
        raise ConfigError(f"--ckpt is required for model {model!r}")
    dev = resolve_device(device)
    if model == "sasrec":
        from training.sasrec.checkpoint import load_sasrec
        from training.sasrec.scorer import SASRecScorer

        return SASRecScorer(load_sasrec(ckpt, device=dev), device=dev)
    if model in ("allmrec", "allmrec-gen"):  # likelihood ranking | generation matched to a candidate
        from training.allmrec.scorer import load_allmrec_scorer

        mode = "generate" if model == "allmrec-gen" else "likelihood"
        return load_allmrec_scorer(ckpt, data, device=dev, mode=mode)
    if model == "hybrid":  # --ckpt: an LLM-SRec checkpoint that records its blend with its SASRec
        from training.llmsrec.hybrid import load_hybrid_scorer

        return load_hybrid_scorer(ckpt, data, device=dev)
    from training.llmsrec.scorer import load_llmsrec_scorer

    return load_llmsrec_scorer(ckpt, data, device=dev, expect_variant=model)
