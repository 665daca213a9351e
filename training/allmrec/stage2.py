"""A-LLMRec stage 2: only F_U and F_I train, over a frozen LLM, frozen SASRec and frozen stage 1. One
example per user: history s[:-3] of the train part, target s[-3], 19 negatives (unseen, warm, another
title) shuffled with it into the prompt; LM loss on the target title. Validation: 1+19 Hit@1 by likelihood.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from models.allmrec import ALLMRecStage2, Stage2Config
from models.allmrec_encoder import ALLMRecEncoder
from models.allmrec_scoring import ALLMRecScoring
from models.prompts import ALLMRecPromptConfig, allmrec_template_version
from training.allmrec.calibration import calibrate, write_calibration
from training.allmrec.checkpoint import (
    STAGE2_FILE,
    build_encoder,
    check_dataset,
    load_stage1,
    load_stage2,
    plot_curves,
    read_config,
    save_module,
    write_history,
)
from training.allmrec.config import Stage2TrainConfig, check_stage2
from training.allmrec.scorer import ALLMRecScorer
from training.common.device import resolve_device
from training.common.errors import ConfigError
from training.common.llm import assert_frozen, load_llm
from training.data.dataset import PreparedData, seeded_subset
from training.evaluation.protocol import evaluate

log = logging.getLogger(__name__)


@dataclass
class Stage2Example:
    history: np.ndarray  # item ids, oldest first
    target: int
    seen: frozenset[int]  # never a negative


def stage2_examples(data: PreparedData, max_users: int, seed: int) -> list[Stage2Example]:
    """One example per user with a train part of 2+ items: history s[:-3], target s[-3]."""
    users = seeded_subset(np.arange(data.n_users), max_users, seed)
    examples = []
    for u in users:
        train = np.asarray(data.sequences[u][:-2])
        if len(train) >= 2:
            examples.append(Stage2Example(train[:-1], int(train[-1]), frozenset(int(i) for i in train)))
    if not examples:
        raise ConfigError(f"dataset {data.name!r}: no user has a train sequence of 2+ items")
    return examples


def training_candidates(
    rng: np.random.Generator, example: Stage2Example, encoder: ALLMRecEncoder, n: int
) -> list[int]:
    """The target and n-1 distinct negatives (unseen, not cold, not sharing the target's title), shuffled."""
    n_items, cold = len(encoder.titles) - 1, encoder.stage1.cold
    target_title = encoder.title(example.target)
    if n_items - len(example.seen) - int(cold.sum()) < n - 1:
        raise ConfigError(f"not enough items for {n - 1} negatives")
    chosen: list[int] = []
    while len(chosen) < n - 1:
        item = int(rng.integers(1, n_items + 1))
        if item in example.seen or item in chosen or bool(cold[item]) or encoder.title(item) == target_title:
            continue
        chosen.append(item)
    cands = [example.target, *chosen]
    return [cands[i] for i in rng.permutation(n)]


def new_stage2(encoder_parts: tuple[int, int, int], seed: int) -> ALLMRecStage2:
    torch.manual_seed(seed)
    return ALLMRecStage2(Stage2Config(*encoder_parts))


def setup_stage2(
    data: PreparedData, sasrec_dir: Path, stage1_dir: Path, config: Stage2TrainConfig, llm: Any = None
) -> tuple[ALLMRecEncoder, Any, dict[str, Any]]:
    """Frozen LLM (loaded unless given), frozen stage 1 and SASRec, stage 2 (fresh or `config.init`'s) →
    encoder."""
    device = resolve_device(config.device)
    stage1, s1_config = load_stage1(Path(stage1_dir), device)
    check_dataset(s1_config, data, Path(stage1_dir))
    llm = llm or load_llm(config.llm, device=device, dtype=config.dtype)
    sizes = (stage1.config.d_cf, stage1.config.latent, int(llm.spec["hidden_size"]))
    stage2 = new_stage2(sizes, config.seed).to(device)
    if config.init:  # continue from a stage-2 checkpoint of the same shape and prompt
        init, init_cfg = load_stage2(Path(config.init), device)
        if init.config != stage2.config or init_cfg["prompt"]["version"] != allmrec_template_version(
            config.template
        ):
            raise ConfigError(
                f"--init {config.init}: another stage-2 shape or prompt template than this run's"
            )
        stage2.load_state_dict(init.state_dict())
    version = allmrec_template_version(config.template)
    prompt = ALLMRecPromptConfig(data.verb, data.noun, config.history_len, config.max_title_tokens, version)
    encoder = build_encoder(llm, Path(sasrec_dir), stage1, stage2, data, prompt)
    table = encoder.sasrec.item_embeddings().detach().float()[1:]
    if table.shape != stage1.cf_item_emb[1:].shape or not torch.equal(table, stage1.cf_item_emb[1:]):
        raise ConfigError(
            f"{stage1_dir} was trained on another SASRec than {sasrec_dir} (item tables differ)"
        )
    return encoder, llm, s1_config


def validate(data: PreparedData, encoder: ALLMRecEncoder, config: Stage2TrainConfig) -> dict[str, Any]:
    encoder.stage2.eval()
    scoring = ALLMRecScoring(config.rank_score)  # the score the ranking loss trains (sum: the paper's)
    scorer = ALLMRecScorer(encoder, "likelihood", config.eval_batch_size, config.eval_seed, scoring)
    metrics = evaluate(
        data,
        scorer,
        "1+19",
        split="valid",
        seed=config.eval_seed,
        max_users=config.eval_max_users,
        batch_size=config.eval_batch_size,
        progress=config.progress,
    )
    encoder.stage2.train()
    return metrics


def train_stage2(
    data: PreparedData,
    sasrec_dir: Path,
    stage1_dir: Path,
    config: Stage2TrainConfig,
    out: Path,
    llm: Any = None,
) -> dict[str, Any]:
    """Train F_U and F_I; keep the best validation Hit@1 epoch (the last when validation is off)."""
    check_stage2(config)
    out = Path(out)
    encoder, llm, _ = setup_stage2(data, sasrec_dir, stage1_dir, config, llm)
    stage2 = encoder.stage2.train()
    assert_frozen(llm.model)
    examples = stage2_examples(data, config.max_users, config.seed)
    optimizer = torch.optim.Adam([p for p in stage2.parameters() if p.requires_grad], lr=config.lr)
    steps: list[dict[str, Any]] = []
    epochs: list[dict[str, Any]] = []
    best_epoch, best_valid = 0, dict[str, Any]()
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        loss, n_seen, stopped = _run_epoch(encoder, examples, optimizer, config, epoch, steps, start)
        valid = validate(data, encoder, config) if config.eval_max_users > 0 else {}
        seconds = round(time.perf_counter() - start, 1)
        epochs.append({"epoch": epoch, "loss": loss, "examples": n_seen, "seconds": seconds, "valid": valid})
        log.info("stage2 epoch %d: loss %.4f, valid %s", epoch, loss, valid)
        out.mkdir(parents=True, exist_ok=True)
        write_history(out, epochs)  # every epoch, so an interrupted run keeps its record
        (out / "steps.json").write_text(json.dumps(steps))
        if not valid or valid["hr@1"] > best_valid.get("hr@1", -1.0):  # ties keep the earlier epoch
            best_epoch, best_valid = epoch, valid
            _save(out, encoder, data, sasrec_dir, stage1_dir, config, llm.spec, epochs)
        if stopped:
            break
    plot_curves(steps, ["loss", "loss_avg"], out / "training_curve.png", x="step")
    seconds = time.perf_counter() - start
    calibration = _calibrate(data, encoder, config, out) if config.calibration_users > 0 else None
    return {
        "out": str(out),
        "best_epoch": best_epoch,
        "valid": best_valid,
        "scoring": None if calibration is None else calibration["scoring"],
        "scoring_valid": None if calibration is None else calibration["valid"],
        "epochs_run": len(epochs),
        "train_seconds": seconds,
        "examples_per_s": sum(e["examples"] for e in epochs) / max(seconds, 1e-9),
    }


def _calibrate(
    data: PreparedData, encoder: ALLMRecEncoder, config: Stage2TrainConfig, out: Path
) -> dict[str, Any]:
    """The kept (best-epoch) weights, calibrated on validation; config.json records the chosen scoring."""
    encoder.stage2.load_state_dict(load_file(out / STAGE2_FILE))
    encoder.stage2.eval()
    scorer = ALLMRecScorer(
        encoder, "likelihood", config.eval_batch_size, config.eval_seed, progress=config.progress
    )
    record = calibrate(data, scorer, config.calibration_users, config.eval_seed)
    write_calibration(out, read_config(out, "stage2"), record)
    return record


def _run_epoch(
    encoder: ALLMRecEncoder,
    examples: list[Stage2Example],
    optimizer: torch.optim.Optimizer,
    config: Stage2TrainConfig,
    epoch: int,
    steps: list[dict[str, Any]],
    start: float,
) -> tuple[float, int, bool]:
    """One pass (or until the time budget ends); returns (mean loss, examples seen, stopped early)."""
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(len(examples))
    total, seen = 0.0, 0
    bar = tqdm(
        range(0, len(order), config.batch_size), desc=f"stage2 epoch {epoch}", disable=not config.progress
    )
    for begin in bar:
        batch = [examples[i] for i in order[begin : begin + config.batch_size]]
        cands = [training_candidates(rng, e, encoder, config.n_candidates) for e in batch]
        histories, targets = [e.history for e in batch], [e.target for e in batch]
        parts: dict[str, float] = {}
        if config.rank_loss_weight > 0:  # ours: the paper's LM loss + a listwise ranking loss, one forward
            losses = encoder.ranking_losses(histories, cands, targets, config.rank_score)
            loss = losses["lm"] + config.rank_loss_weight * losses["rank"]
            parts = {"lm": float(losses["lm"].detach()), "rank": float(losses["rank"].detach())}
        else:  # the paper's LM loss on the target title
            loss = encoder.loss(histories, cands, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        total, seen = total + value * len(batch), seen + len(batch)
        avg = float(np.mean([s["loss"] for s in steps[-19:]] + [value]))
        steps.append({"step": len(steps) + 1, "loss": value, "loss_avg": avg, **parts})
        bar.set_postfix(loss=value, avg=avg)
        if 0 < config.time_budget_s <= time.perf_counter() - start:
            log.info("stage2: time budget of %.0f s reached after %d examples", config.time_budget_s, seen)
            return total / max(seen, 1), seen, True
    return total / max(seen, 1), seen, False


def _save(
    out: Path,
    encoder: ALLMRecEncoder,
    data: PreparedData,
    sasrec_dir: Path,
    stage1_dir: Path,
    config: Stage2TrainConfig,
    llm_spec: dict[str, Any],
    epochs: list[dict[str, Any]],
) -> None:
    meta = {
        "stage": "stage2",
        "model": dataclasses.asdict(encoder.stage2.config),
        "train": dataclasses.asdict(config),
        "llm": llm_spec | {"prompt_template_version": encoder.prompt.version},
        "prompt": dataclasses.asdict(encoder.prompt),
        "dataset": data.name,
        "n_items": data.n_items,
        "stage1_dir": str(Path(stage1_dir).resolve()),
        "sasrec_dir": str(Path(sasrec_dir).resolve()),
        "best_epoch": epochs[-1]["epoch"],
        "valid": epochs[-1]["valid"],
    }
    save_module(out, STAGE2_FILE, encoder.stage2, meta)
