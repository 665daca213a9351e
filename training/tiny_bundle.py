"""A tiny but real service bundle, written by the real training code: a processed toy dataset, a random
SASRec checkpoint, a random 2-layer Llama saved with save_pretrained, LLM-SRec heads + item table from the
shared encoder, then training.export.export_bundle(include_llm=True); and the same with both A-LLMRec parts
(a random stage 1 whose text table is random or MiniLM's, then `train_stage2` and `train_allmrec_genre` for
one short epoch each). Used by the tests and the benches; seconds on a CPU, nothing downloaded."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from models.allmrec import ALLMRecStage1, Stage1Config
from models.prompts import PROMPT_TEMPLATE_VERSION, PromptConfig
from models.sasrec import SASRec, SASRecConfig
from training.allmrec.checkpoint import STAGE1_FILE, save_module
from training.allmrec.config import GenreTrainConfig, Stage2TrainConfig
from training.allmrec.genre import train_allmrec_genre
from training.allmrec.stage2 import train_stage2
from training.allmrec.text_encoder import load_text_embeddings
from training.common.llm import load_llm, write_tiny_llama
from training.data.dataset import load_prepared
from training.data.readers import RawItem
from training.data.writer import UserSequence, write_processed
from training.export import export_bundle
from training.llmsrec.checkpoint import checkpoint_config, save_llmsrec
from training.llmsrec.item_table import compute_item_table
from training.llmsrec.scorer import build_encoder
from training.llmsrec.train import new_heads
from training.sasrec.checkpoint import load_sasrec, save_checkpoint

N_ITEMS = 60
GENRES = ["Action", "Comedy", "Drama", "Horror"]
SASREC_MAX_LEN = 20
HISTORY_LEN = 10
TextTable = Literal["random", "minilm"]  # stage 1's text table: random (size 8) or MiniLM's (size 384)


def item_genres(item_id: int) -> list[str]:
    """Items 1..N: genre i % 4, plus Drama for every third item."""
    genres = {GENRES[item_id % 4]}
    if item_id % 3 == 0:
        genres.add("Drama")
    return sorted(genres)


def write_dataset(root: Path) -> Path:
    """A processed dataset directory, written by `llmrec data prepare`'s own writer."""
    rng = np.random.default_rng(0)
    items = {
        f"m{i}": RawItem(f'Film "{i}" part {i % 7}', 1980 + i % 30, tuple(item_genres(i)))
        for i in range(1, N_ITEMS + 1)
    }
    sequences = []
    for u in range(30):
        seq = rng.choice(np.arange(1, N_ITEMS + 1), size=int(rng.integers(4, 15)), replace=False).tolist()
        stamps = (8.8e8 + 86_400 * np.arange(len(seq))).astype(int).tolist()
        sequences.append((f"user{u}", UserSequence([f"m{i}" for i in seq], stamps)))
    meta = {"name": "tiny", "verb": "watched", "noun": "movie", "genres": GENRES, "source": {}, "config": {}}
    return write_processed(root, meta, items, sequences, removed={})


def write_sasrec(out: Path) -> SASRec:
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=N_ITEMS, hidden=16, n_blocks=1, max_len=SASREC_MAX_LEN)).eval()
    meta = {
        "format_version": 1,
        "dataset": "tiny",
        "model": dataclasses.asdict(model.config),
        "train": {"epochs": 0},
        "best_epoch": 1,
        "valid": {"ndcg@10": 0.1},
    }
    save_checkpoint(out, model, meta, [{"epoch": 1, "loss": 0.7, "valid": {"ndcg@10": 0.1}}])
    return model


def build_tiny_bundle(work: Path, template_version: str = PROMPT_TEMPLATE_VERSION) -> Path:
    """Write every input under `work` and export the bundle to work/bundle; returns the bundle path."""
    data_dir = write_dataset(work / "data")
    teacher = write_sasrec(work / "sasrec")
    llm = load_llm(str(write_tiny_llama(work / "llm")), device="cpu", dtype="float32")
    data = load_prepared(data_dir)
    heads = new_heads(data, teacher, llm, seed=0).eval()
    prompt = PromptConfig(data.verb, data.noun, HISTORY_LEN, max_title_tokens=24, version=template_version)
    table = compute_item_table(build_encoder(llm, heads, data, prompt), data.n_items, progress=False)
    config = checkpoint_config(
        "tiny", llm.spec, heads, prompt, "llmsrec", {"epochs": 0}, work / "sasrec", 1, {}
    )
    save_llmsrec(work / "llmsrec", heads, table, config)
    return export_bundle(data_dir, work / "sasrec", work / "llmsrec", work / "bundle", include_llm=True)


def write_stage1(work: Path, out: Path, text: TextTable = "random") -> Path:
    """A random stage 1 (latent 8) whose CF table is the tiny SASRec's item table; its text table random
    (size 8) or all-MiniLM-L6-v2's embeddings of the items' texts (size 384, what `export add-items` adds)."""
    sasrec = load_sasrec(work / "sasrec")
    n = sasrec.config.n_items
    torch.manual_seed(1)
    minilm = None
    if text == "minilm":
        data = load_prepared(work / "data")
        minilm = torch.from_numpy(load_text_embeddings(data, cache_dir=work / "text_embeddings"))
    d_text = 8 if minilm is None else minilm.shape[1]
    stage1 = ALLMRecStage1(Stage1Config(n_items=n, d_cf=sasrec.config.hidden, d_text=d_text, latent=8))
    table = torch.randn(n + 1, 8) if minilm is None else minilm
    stage1.set_tables(sasrec.item_embeddings().detach().float(), table)
    meta = {
        "stage": "stage1",
        "model": dataclasses.asdict(stage1.config),
        "dataset": "tiny",
        "n_items": n,
        "sasrec_dir": str((work / "sasrec").resolve()),
    }
    save_module(out, STAGE1_FILE, stage1, meta)
    return out


def build_genre_bundle(work: Path, text: TextTable = "random") -> Path:
    """work/ holds the tiny bundle's inputs (`build_tiny_bundle`); writes work/bundle_genre (with the
    A-LLMRec recommendation part too), or work/bundle_minilm for a stage 1 over MiniLM's text table."""
    suffix = "" if text == "random" else f"_{text}"
    stage1 = write_stage1(work, work / f"stage1{suffix}", text)
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
    train_allmrec_genre(data, work / "sasrec", stage1, config, work / f"genre{suffix}")
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
    train_stage2(data, work / "sasrec", stage1, stage2, work / f"allmrec{suffix}")
    return export_bundle(
        work / "data",
        work / "sasrec",
        work / "llmsrec",
        work / ("bundle_genre" if text == "random" else f"bundle{suffix}"),
        include_llm=True,
        allmrec_dir=work / f"allmrec{suffix}",
        allmrec_genre_dir=work / f"genre{suffix}",
    )
