"""Tiny bundles with a hybrid part, built by the real code over the inputs of training.tiny_bundle: copies
of its SASRec and LLM-SRec checkpoints whose config.json carry 1+99 validation metrics (the LLM-SRec one
also a `hybrid` record, written by training.llmsrec.checkpoint.checkpoint_config), then export_bundle."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from models.hybrid import HybridConfig
from training.export import export_bundle
from training.llmsrec.checkpoint import checkpoint_config, load_llmsrec, save_llmsrec

# Scales near the std of each tiny model's scores over the catalogue, so that both halves of the blend count:
# its top-10 lists differ from both LLM-SRec's and SASRec's (tests/app/test_hybrid.py checks this).
HYBRID = HybridConfig(weight=0.5, scale_llmsrec=0.0175, scale_sasrec=0.65)


def valid_metrics(ndcg: float | None, protocol: str = "1+99") -> dict[str, Any]:
    """A validation record as training.evaluation writes it; {} for None (a model without metrics)."""
    if ndcg is None:
        return {}
    return {
        "ndcg@10": ndcg,
        "hr@10": min(1.0, 2 * ndcg),
        "protocol": protocol,
        "split": "valid",
        "n_users": 30,
    }


def build_hybrid_bundle(
    work: Path, name: str, ndcg: Mapping[str, float | None], hybrid: HybridConfig = HYBRID
) -> Path:
    """work/<name>: the tiny bundle's SASRec and LLM-SRec plus the hybrid, with validation NDCG@10 `ndcg`
    per model (keys sasrec, llmsrec, hybrid)."""
    sasrec = work / f"{name}-sasrec"
    shutil.copytree(work / "sasrec", sasrec)
    meta = json.loads((sasrec / "config.json").read_text())
    (sasrec / "config.json").write_text(json.dumps(meta | {"valid": valid_metrics(ndcg["sasrec"])}))
    ckpt = load_llmsrec(work / "llmsrec")
    cfg = ckpt.config
    config = checkpoint_config(
        cfg["dataset"],
        cfg["llm"],
        ckpt.heads,
        ckpt.prompt,
        cfg["variant"],
        cfg["train"],
        Path(cfg["sasrec_dir"]),
        cfg["best_epoch"],
        valid_metrics(ndcg["llmsrec"]),
        hybrid=hybrid.to_dict() | {"valid": valid_metrics(ndcg["hybrid"])},
    )
    save_llmsrec(work / f"{name}-llmsrec", ckpt.heads, ckpt.item_table, config)
    return export_bundle(work / "data", sasrec, work / f"{name}-llmsrec", work / name, include_llm=True)
