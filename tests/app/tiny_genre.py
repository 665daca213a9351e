"""A tiny bundle with both A-LLMRec parts, built by the real code over the tiny bundle's inputs (data,
SASRec, LLM-SRec, random Llama): a random stage 1 aligned to that SASRec, then `train_stage2` (next-item
titles) and `train_allmrec_genre` for one short epoch each, then
`export_bundle(..., allmrec_dir=..., allmrec_genre_dir=...)`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from models.allmrec import ALLMRecStage1, Stage1Config
from training.allmrec_checkpoint import STAGE1_FILE, save_module
from training.allmrec_genre_train import GenreTrainConfig, train_allmrec_genre
from training.allmrec_stage2 import Stage2TrainConfig, train_stage2
from training.data.dataset import load_prepared
from training.export import export_bundle
from training.sasrec_scorer import load_sasrec


def write_stage1(work: Path, out: Path) -> Path:
    """A random stage 1 (text size 8, latent 8) whose CF table is the tiny SASRec's item table."""
    sasrec = load_sasrec(work / "sasrec")
    n = sasrec.config.n_items
    torch.manual_seed(1)
    stage1 = ALLMRecStage1(Stage1Config(n_items=n, d_cf=sasrec.config.hidden, d_text=8, latent=8))
    stage1.set_tables(sasrec.item_embeddings().detach().float(), torch.randn(n + 1, 8))
    meta = {
        "stage": "stage1",
        "model": dataclasses.asdict(stage1.config),
        "dataset": "tiny",
        "n_items": n,
        "sasrec_dir": str((work / "sasrec").resolve()),
    }
    save_module(out, STAGE1_FILE, stage1, meta)
    return out


def build_genre_bundle(work: Path) -> Path:
    """work/ holds the tiny bundle's inputs (tests.app.tiny_bundle); writes work/bundle_genre (with the
    A-LLMRec recommendation part too)."""
    stage1 = write_stage1(work, work / "stage1")
    config = GenreTrainConfig(
        llm=str(work / "llm"),
        epochs=1,
        batch_size=4,
        lr=1e-3,
        max_users=8,
        valid_users=4,
        device="cpu",
        dtype="float32",
        progress=False,
    )
    data = load_prepared(work / "data")
    train_allmrec_genre(data, work / "sasrec", stage1, config, work / "genre")
    stage2 = Stage2TrainConfig(
        llm=str(work / "llm"),
        epochs=1,
        batch_size=4,
        lr=1e-3,
        n_candidates=8,
        max_users=8,
        eval_max_users=0,
        device="cpu",
        dtype="float32",
        progress=False,
    )
    train_stage2(data, work / "sasrec", stage1, stage2, work / "allmrec")
    return export_bundle(
        work / "data",
        work / "sasrec",
        work / "llmsrec",
        work / "bundle_genre",
        include_llm=True,
        allmrec_dir=work / "allmrec",
        allmrec_genre_dir=work / "genre",
    )
