"""Which scorer evaluates which model name: a small registry with lazy imports."""

from __future__ import annotations

from pathlib import Path

import torch

from training.data.dataset import PreparedData
from training.errors import ConfigError
from training.evaluation import Scorer

MODEL_NAMES = ("sasrec", "llmsrec", "llm-only", "hybrid", "allmrec", "allmrec-gen", "popularity")


def resolve_device(device: str) -> str:
    """`auto` → cuda when available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here")
    return device


def load_scorer(model: str, ckpt: Path | None, data: PreparedData, device: str = "auto") -> Scorer:
    """Build the scorer for `model` from its checkpoint directory."""
    if model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {model!r}; choose one of {', '.join(MODEL_NAMES)}")
    if model == "popularity":
        from training.evaluation import PopularityScorer

        return PopularityScorer(data)
    if ckpt is None:
        raise ConfigError(f"--ckpt is required for model {model!r}")
    dev = resolve_device(device)
    if model == "sasrec":
        from training.sasrec_train import SASRecScorer, load_sasrec

        return SASRecScorer(load_sasrec(ckpt, device=dev), device=dev)
    if model in ("allmrec", "allmrec-gen"):  # likelihood ranking | generation matched to a candidate
        from training.allmrec_scorer import load_allmrec_scorer

        mode = "generate" if model == "allmrec-gen" else "likelihood"
        return load_allmrec_scorer(ckpt, data, device=dev, mode=mode)
    if model == "hybrid":  # --ckpt: an LLM-SRec checkpoint that records its blend with its SASRec
        from training.hybrid import load_hybrid_scorer

        return load_hybrid_scorer(ckpt, data, device=dev)
    from training.llmsrec_train import load_llmsrec_scorer

    return load_llmsrec_scorer(ckpt, data, device=dev, expect_variant=model)
