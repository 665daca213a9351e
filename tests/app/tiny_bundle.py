"""A tiny but real service bundle, written by the real training code: a processed toy dataset, a random
SASRec checkpoint, a random 2-layer Llama saved with save_pretrained, LLM-SRec heads + item table from the
shared encoder, then training.export.export_bundle(include_llm=True). Used by the tests and the bench."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from models.prompts import PROMPT_TEMPLATE_VERSION, PromptConfig
from models.sasrec import SASRec, SASRecConfig
from tests.models.tiny_llm import tiny_tokenizer
from training.data.dataset import load_prepared
from training.export import export_bundle
from training.item_table import compute_item_table
from training.llm import load_llm
from training.llmsrec_scorer import build_encoder, checkpoint_config, save_llmsrec
from training.llmsrec_train import new_heads
from training.sasrec_scorer import save_checkpoint

N_ITEMS = 60
GENRES = ["Action", "Comedy", "Drama", "Horror"]
SASREC_MAX_LEN = 20
HISTORY_LEN = 10


def item_genres(item_id: int) -> list[str]:
    """Items 1..N: genre i % 4, plus Drama for every third item."""
    genres = {GENRES[item_id % 4]}
    if item_id % 3 == 0:
        genres.add("Drama")
    return sorted(genres)


def write_dataset(root: Path) -> Path:
    """A processed dataset directory in the format of `llmrec data prepare`."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    items = [
        {
            "item_id": i,
            "original_id": f"m{i}",
            "title": f'Film "{i}" part {i % 7}',
            "year": 1980 + i % 30,
            "genres": item_genres(i),
        }
        for i in range(1, N_ITEMS + 1)
    ]
    sequences = []
    for u in range(30):
        seq = rng.choice(np.arange(1, N_ITEMS + 1), size=int(rng.integers(4, 15)), replace=False).tolist()
        stamps = (8.8e8 + 86_400 * np.arange(len(seq))).astype(int).tolist()
        sequences.append({"user": f"user{u}", "items": seq, "timestamps": stamps})
    lengths = [len(s["items"]) for s in sequences]
    meta = {
        "format_version": 1,
        "name": "tiny",
        "verb": "watched",
        "noun": "movie",
        "genres": GENRES,
        "source": {},
        "config": {},
    }
    stats = {
        "users": len(sequences),
        "items": N_ITEMS,
        "interactions": sum(lengths),
        "avg_length": sum(lengths) / len(lengths),
        "min_length": min(lengths),
        "max_length": max(lengths),
    }
    (root / "dataset.json").write_text(json.dumps(meta))
    (root / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in items))
    (root / "sequences.jsonl").write_text("".join(json.dumps(row) + "\n" for row in sequences))
    (root / "stats.json").write_text(json.dumps(stats))
    return root


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


def write_llm(out: Path, hidden: int = 32) -> Path:
    """A random 2-layer Llama and its byte-level tokenizer, saved like any HF model directory."""
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_bundle(work: Path, template_version: str = PROMPT_TEMPLATE_VERSION) -> Path:
    """Write every input under `work` and export the bundle to work/bundle; returns the bundle path."""
    data_dir = write_dataset(work / "data")
    teacher = write_sasrec(work / "sasrec")
    llm = load_llm(str(write_llm(work / "llm")), device="cpu", dtype="float32")
    data = load_prepared(data_dir)
    heads = new_heads(data, teacher, llm, seed=0).eval()
    prompt = PromptConfig(data.verb, data.noun, HISTORY_LEN, max_title_tokens=24, version=template_version)
    table = compute_item_table(build_encoder(llm, heads, data, prompt), data.n_items, progress=False)
    config = checkpoint_config(
        "tiny", llm.spec, heads, prompt, "llmsrec", {"epochs": 0}, work / "sasrec", 1, {}
    )
    save_llmsrec(work / "llmsrec", heads, table, config)
    return export_bundle(data_dir, work / "sasrec", work / "llmsrec", work / "bundle", include_llm=True)
