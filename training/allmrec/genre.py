"""Train A-LLMRec's genre prompt: stage 2 (F_U, F_I; initialised from a stage-2 checkpoint or fresh) learns,
by LM loss, to continue the genre prompt with the genres of the user's next item; the LLM, SASRec and stage 1
stay frozen. One example per user (train sequence s[:-2]: input s[:-3] → genres of s[-3]); validation
(s[:-2] → genres of s[-2]) keeps the best epoch. Checkpoint: config.json + stage2.safetensors."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tqdm.auto import tqdm

from models.allmrec import ALLMRecStage1, ALLMRecStage2, Stage2Config
from models.allmrec_genre import GENRE_TEMPLATE_VERSION, GenreEncoder, genre_target
from models.allmrec_scoring import GenreBlend, blend_genre_scores, history_genre_shares, row_spread
from models.prompts import ALLMREC_TEMPLATE_VERSION, ALLMRecPromptConfig
from models.runtime import LoadedLLM
from training.allmrec.calibration import best_row, weight_grid
from training.allmrec.checkpoint import (
    CONFIG_FILE,
    STAGE2_FILE,
    atomic_write,
    build_encoder,
    check_dataset,
    load_checkpoint_llm,
    load_stage1,
    load_stage2,
    read_config,
    save_module,
)
from training.allmrec.config import GenreTrainConfig
from training.common.device import resolve_device
from training.common.errors import CheckpointError, ConfigError
from training.common.llm import assert_frozen, load_llm
from training.data.dataset import PreparedData, seeded_subset
from training.evaluation.genre import (
    evaluate_genres,
    genre_matrix,
    genre_metrics,
    genre_users,
    genre_vocab,
    target_labels,
)

log = logging.getLogger(__name__)
STAGE = "allmrec-genre"


@dataclass
class GenreExample:
    history: np.ndarray
    genres: list[str]


def genre_examples(data: PreparedData, vocab: list[str], max_users: int, seed: int) -> list[GenreExample]:
    """One example per user whose train target s[-3] has a genre (and an input of ≥ 1 item)."""
    matrix = genre_matrix(data, vocab)
    users = seeded_subset(np.arange(data.n_users), max_users, seed)
    examples = []
    for u in users:
        train = data.sequences[u][:-2]
        if len(train) >= 2 and matrix[train[-1]].any():
            examples.append(GenreExample(train[:-1], [vocab[g] for g in np.flatnonzero(matrix[train[-1]])]))
    if not examples:
        raise ConfigError(f"dataset {data.name!r}: no training user has a next item with a genre")
    return examples


def _stage2(
    data: PreparedData,
    sasrec_dir: Path,
    stage1_dir: Path,
    init: Path | None,
    config: GenreTrainConfig,
    device: str,
) -> tuple[ALLMRecStage1, ALLMRecStage2, LoadedLLM]:
    """Frozen stage 1, stage 2 to train (from `init` or fresh), and the LLM (init's, or `config.llm`)."""
    stage1, _ = load_stage1(stage1_dir, device)
    if stage1.config.n_items != data.n_items:
        raise CheckpointError(f"{stage1_dir}: stage 1 has {stage1.config.n_items} items, data {data.n_items}")
    if init is not None:
        stage2, init_cfg = load_stage2(init, device)
        check_dataset(init_cfg, data, init)
        llm = load_checkpoint_llm(init_cfg["llm"], device, config.dtype)
    else:
        llm = load_llm(config.llm, device=device, dtype=config.dtype)
        torch.manual_seed(config.seed)
        hidden = int(llm.spec["hidden_size"])
        stage2 = ALLMRecStage2(Stage2Config(stage1.config.d_cf, stage1.config.latent, hidden)).to(device)
    if stage2.config.llm_hidden != int(llm.spec["hidden_size"]):
        raise CheckpointError(f"LLM hidden {llm.spec['hidden_size']} != stage 2's {stage2.config.llm_hidden}")
    return stage1, stage2, llm


def train_allmrec_genre(
    data: PreparedData,
    sasrec_dir: Path,
    stage1_dir: Path,
    config: GenreTrainConfig,
    out: Path,
    stage2_init: Path | None = None,
) -> dict[str, Any]:
    """Train, validate per epoch, keep the best validation NDCG; returns the result summary."""
    device = resolve_device(config.device)
    vocab = genre_vocab(data)
    stage1, stage2, llm = _stage2(data, sasrec_dir, stage1_dir, stage2_init, config, device)
    version = ALLMREC_TEMPLATE_VERSION  # the user token where the initialising stage 2 learned it
    if stage2_init is not None:
        version = str(read_config(Path(stage2_init), "stage2").get("prompt", {}).get("version", version))
    prompt = ALLMRecPromptConfig(data.verb, data.noun, config.history_len, config.max_title_tokens, version)
    allmrec = build_encoder(llm, sasrec_dir, stage1, stage2, data, prompt)
    encoder = GenreEncoder(llm.model, llm.tokenizer, vocab, llm.special_tokens, prompt, allmrec=allmrec)
    stage2.train().requires_grad_(True)
    assert_frozen(llm.model)
    examples = genre_examples(data, vocab, config.max_users, config.seed)
    optimizer = torch.optim.Adam(stage2.parameters(), lr=config.lr)
    matrix = genre_matrix(data, vocab)
    valid = genre_users(data, matrix, "valid", config.valid_users, config.seed)
    paths = {"sasrec_dir": sasrec_dir, "stage1_dir": stage1_dir, "init_stage2": stage2_init}
    ckpt = {
        "stage": STAGE,
        "dataset": data.name,
        "n_items": data.n_items,
        "genres": vocab,
        "model": dataclasses.asdict(stage2.config),
        "prompt": dataclasses.asdict(prompt),
        "genre_template_version": GENRE_TEMPLATE_VERSION,
        "llm": llm.spec,
        "train": dataclasses.asdict(config),
    } | {key: None if p is None else str(Path(p).resolve()) for key, p in paths.items()}
    history, best = [], None
    for epoch in range(config.epochs):
        loss, speed = _run_epoch(encoder, examples, optimizer, config, epoch)
        metrics = _validate(encoder, data, valid, matrix, config)
        history.append({"epoch": epoch + 1, "loss": loss, "examples_per_s": speed, "valid": metrics})
        log.info("genre epoch %d: loss %.4f, valid %s", epoch + 1, loss, metrics)
        if best is None or metrics["ndcg"] > best["valid"]["ndcg"]:
            best = history[-1]
            save_module(Path(out), STAGE2_FILE, stage2, ckpt | {"best_epoch": epoch + 1, "valid": metrics})
    assert best is not None
    stage2.load_state_dict(load_file(Path(out) / STAGE2_FILE))  # the kept epoch
    stage2.eval()
    fit = fit_genre_blend(encoder, data, valid, matrix)
    text = json.dumps(read_config(Path(out), STAGE) | {"blend": fit["blend"], "blend_fit": fit}, indent=2)
    atomic_write(Path(out) / CONFIG_FILE, lambda p: p.write_text(text))
    summary = {k: fit[k] for k in ("blend", "valid", "history_counts")}
    return {
        "out": str(out),
        "best_epoch": best["epoch"],
        "valid": best["valid"],
        "blend": summary,
        "history": history,
    }


def fit_genre_blend(
    encoder: GenreEncoder, data: PreparedData, users: np.ndarray, matrix: np.ndarray
) -> dict[str, Any]:
    """Choose the weight of the history's genre shares against the LLM's genre scores on validation (best
    NDCG, then Hit@1, then the smaller weight); the record keeps every weight's metrics."""
    histories = [data.split_input(int(u), "valid") for u in users]
    labels = target_labels(data, users, matrix, "valid")
    with torch.no_grad():
        llm = np.concatenate(
            [
                encoder.scores(histories[i : i + 16]).float().cpu().numpy()
                for i in range(0, len(histories), 16)
            ]
        )
    shares = history_genre_shares(histories, matrix)
    scales = row_spread(llm), row_spread(shares)
    rows = weight_grid(
        "blend",
        lambda w: GenreBlend(w, *scales),
        lambda blend: genre_metrics(blend_genre_scores(llm, shares, blend), labels),
    )
    best = best_row(rows, "blend", "history_weight", ("ndcg", "hr@1"))
    return {
        "blend": best["blend"],
        "valid": {k: v for k, v in best.items() if k != "blend"} | {"n_users": len(users)},
        "llm_only": rows[0],
        "history_counts": genre_metrics(shares, labels),
        "table": rows,
    }


def _run_epoch(
    encoder: GenreEncoder,
    examples: list[GenreExample],
    optimizer: torch.optim.Optimizer,
    config: GenreTrainConfig,
    epoch: int,
) -> tuple[float, float]:
    """Mean loss and examples/s of one shuffled pass; genre order in each target shuffled per epoch."""
    rng = random.Random(config.seed * 1000 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)
    total, start = 0.0, time.perf_counter()
    bar = tqdm(
        range(0, len(order), config.batch_size), desc=f"genre epoch {epoch + 1}", disable=not config.progress
    )
    for begin in bar:
        batch = [examples[i] for i in order[begin : begin + config.batch_size]]
        loss = encoder.loss([e.history for e in batch], [genre_target(e.genres, rng) for e in batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(batch)
        bar.set_postfix(loss=float(loss.detach()))
    return total / len(examples), len(examples) / max(time.perf_counter() - start, 1e-9)


def _validate(
    encoder: GenreEncoder, data: PreparedData, users: np.ndarray, matrix: np.ndarray, config: GenreTrainConfig
) -> dict[str, float]:
    assert encoder.allmrec is not None
    encoder.allmrec.stage2.eval()
    try:
        with torch.no_grad():
            return evaluate_genres(
                data, lambda h, _u: encoder.scores(h).cpu().numpy(), users, matrix, "valid"
            )
    finally:
        encoder.allmrec.stage2.train()


def load_genre_checkpoint(ckpt_dir: Path, device: str = "cpu") -> tuple[ALLMRecStage2, dict[str, Any]]:
    """The genre-trained stage 2 (eval mode) and its config.json."""
    config = read_config(Path(ckpt_dir), STAGE)
    try:
        module = ALLMRecStage2(Stage2Config(**config["model"]))
        module.load_state_dict(load_file(Path(ckpt_dir) / STAGE2_FILE))
    except (KeyError, TypeError, ValueError, OSError, SafetensorError, RuntimeError) as err:
        raise CheckpointError(f"{ckpt_dir}: cannot load the genre model: {err}") from None
    return module.to(device).eval().requires_grad_(False), config


def load_genre_encoder(
    ckpt_dir: Path, data: PreparedData, device: str = "cpu", llm: LoadedLLM | None = None
) -> tuple[GenreEncoder, LoadedLLM, dict[str, Any]]:
    """Genre checkpoint → the learned GenreEncoder (with its stage 1, SASRec and LLM)."""
    stage2, config = load_genre_checkpoint(ckpt_dir, device)
    check_dataset(config, data, Path(ckpt_dir))
    stage1, _ = load_stage1(Path(config["stage1_dir"]), device)
    llm = llm or load_checkpoint_llm(config["llm"], device)
    prompt = ALLMRecPromptConfig(**config["prompt"])
    allmrec = build_encoder(llm, Path(config["sasrec_dir"]), stage1, stage2, data, prompt)
    genres = list(config["genres"])
    return (
        GenreEncoder(llm.model, llm.tokenizer, genres, llm.special_tokens, prompt, allmrec=allmrec),
        llm,
        config,
    )
