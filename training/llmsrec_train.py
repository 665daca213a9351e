"""Train LLM-SRec: only the heads learn, over a frozen LLM, distilled from a trained SASRec (eval mode).
Examples: each user's train sequence s[:-2]; input = all but its last item, target = its last item.
Validation HR@10 (1+99) drives early stopping; checkpoints are resumable. Reading side: llmsrec_scorer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from models.llmsrec import LLMSRec, LLMSRecConfig, LLMSRecEncoder, LossWeights, llmsrec_loss
from models.prompts import PromptConfig
from models.sasrec import SASRec
from training.data.dataset import PreparedData
from training.errors import CheckpointError, ConfigError
from training.evaluation import evaluate
from training.item_table import compute_item_table
from training.llm import LoadedLLM, assert_frozen, load_llm
from training.llmsrec_scorer import (
    LLMSRecScorer,
    TrainState,
    build_encoder,
    checkpoint_config,
    load_llmsrec,
    load_llmsrec_scorer,
    load_state,
    save_llmsrec,
    save_state,
)
from training.sasrec_train import load_sasrec
from training.scorers import resolve_device

__all__ = ["LLMSRecTrainConfig", "load_llmsrec", "load_llmsrec_scorer", "train_llmsrec"]

log = logging.getLogger(__name__)


def _f(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class LLMSRecTrainConfig:
    llm: str = _f("smollm2", "LLM: alias (smollm2), local path or HF id.")
    variant: Literal["llmsrec", "llm-only"] = _f("llmsrec", "llm-only = no distillation, no uniformity.")
    epochs: int = _f(10, "Maximum epochs.")
    batch_size: int = _f(20, "Users per optimisation step.")
    lr: float = _f(1e-4, "Adam learning rate.")
    patience: int = _f(5, "Stop after this many epochs without a better validation HR@10.")
    n_negatives: int = _f(3, "Negative item prompts per user (never the positive or a history item).")
    w_retrieval: float = _f(1.0, "Weight of the retrieval cross-entropy.")
    w_distill: float = _f(1.0, "Weight of the MSE distillation to SASRec (0 for llm-only).")
    w_uniformity: float = _f(1.0, "Weight of the uniformity terms (0 for llm-only).")
    history_len: int = _f(10, "Items shown in the user prompt (the most recent).")
    max_title_tokens: int = _f(24, "Titles are cut to this many tokens.")
    max_users: int = _f(0, "Train on a seeded subset of this many users (0 = all).")
    eval_max_users: int = _f(10_000, "Validation users per epoch (seeded subset when fewer than all).")
    eval_seed: int = _f(0, "Seed of the shared validation candidates.")
    item_batch_size: int = _f(64, "Item prompts per forward when building the item table.")
    user_batch_size: int = _f(16, "User prompts per forward at evaluation.")
    seed: int = _f(0, "Seed of initialisation, user subset, shuffling and negatives.")
    device: str = _f("auto", "auto | cpu | cuda[:N].")
    dtype: str = _f("auto", "LLM dtype: auto (bf16 on CUDA if supported, else float32) | float32 | bfloat16.")
    resume: bool = _f(False, "Continue from OUT/train_state.pt (optimizer state and epoch).")
    progress: bool = _f(True, "Show progress bars.")

    def loss_weights(self) -> LossWeights:
        if self.variant == "llm-only":
            return LossWeights(self.w_retrieval, 0.0, 0.0)
        return LossWeights(self.w_retrieval, self.w_distill, self.w_uniformity)


@dataclass
class Example:
    history: np.ndarray  # item ids, chronological
    timestamps: np.ndarray | None
    target: int
    seen: frozenset[int]  # every item of the user's train sequence: never a negative


def training_examples(data: PreparedData, max_users: int, seed: int) -> list[Example]:
    """One example per user: train sequence s[:-2] → input s[:-3], target s[-3]."""
    users = np.arange(data.n_users)
    if 0 < max_users < data.n_users:
        users = np.sort(np.random.default_rng(seed).choice(data.n_users, max_users, replace=False))
    examples = []
    for u in users:
        train = np.asarray(data.sequences[u][:-2])
        ts = data.timestamps[u]
        if len(train) >= 2:
            t = None if ts is None else np.asarray(ts[: len(train) - 1])
            examples.append(Example(train[:-1], t, int(train[-1]), frozenset(int(i) for i in train)))
    if not examples:
        raise ConfigError(f"dataset {data.name!r}: no user has a train sequence of 2+ items")
    return examples


def sample_negatives(rng: np.random.Generator, n_items: int, seen: frozenset[int], k: int) -> list[int]:
    """k distinct items from 1..n_items outside `seen` (rejection sampling)."""
    if n_items - len(seen) < k:
        raise ConfigError(f"only {n_items - len(seen)} items are available as negatives, {k} needed")
    chosen: list[int] = []
    while len(chosen) < k:
        item = int(rng.integers(1, n_items + 1))
        if item not in seen and item not in chosen:
            chosen.append(item)
    return chosen


def left_pad(histories: list[np.ndarray], max_len: int, device: torch.device) -> torch.Tensor:
    """SASRec input: (B, max_len) item ids, right-aligned, 0 = padding."""
    out = torch.zeros((len(histories), max_len), dtype=torch.long)
    for b, h in enumerate(histories):
        tail = torch.as_tensor(np.asarray(h)[-max_len:], dtype=torch.long)
        out[b, max_len - len(tail) :] = tail
    return out.to(device)


def _autocast(device: torch.device, llm_dtype: torch.dtype) -> contextlib.AbstractContextManager[Any]:
    if llm_dtype == torch.bfloat16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_step(
    encoder: LLMSRecEncoder,
    teacher: SASRec | None,
    batch: list[Example],
    negatives: list[list[int]],
    weights: LossWeights,
    optimizer: torch.optim.Optimizer,
) -> dict[str, float]:
    """One Adam step on a batch; returns the loss components."""
    heads = encoder.heads
    device = heads.cf_item_emb.device
    with _autocast(device, encoder.llm_dtype):
        users = encoder.user_vectors([e.history for e in batch], [e.timestamps for e in batch]).float()
        flat = [i for e, neg in zip(batch, negatives, strict=True) for i in (e.target, *neg)]
        items = encoder.item_vectors(flat).float().view(len(batch), -1, users.shape[-1])  # (B, 1 + K, D)
        target = None
        if teacher is not None:
            with torch.no_grad():
                cf_user = teacher.user_vector(
                    left_pad([e.history for e in batch], teacher.config.max_len, device)
                )
            target = heads.teacher_vector(cf_user.float()).float()
    parts = llmsrec_loss(users, items, target, weights)
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in parts.items()}


def run_epoch(
    encoder: LLMSRecEncoder,
    teacher: SASRec | None,
    examples: list[Example],
    optimizer: torch.optim.Optimizer,
    config: LLMSRecTrainConfig,
    epoch: int,
) -> dict[str, float]:
    """Shuffle, sample negatives (seeded by epoch, so a resumed run sees the same), step; mean components."""
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(len(examples))
    n_items = encoder.heads.config.n_items
    sums: dict[str, float] = {}
    bar = tqdm(
        range(0, len(order), config.batch_size), desc=f"epoch {epoch + 1}", disable=not config.progress
    )
    start = time.perf_counter()
    for begin in bar:
        batch = [examples[i] for i in order[begin : begin + config.batch_size]]
        negatives = [sample_negatives(rng, n_items, e.seen, config.n_negatives) for e in batch]
        parts = train_step(encoder, teacher, batch, negatives, config.loss_weights(), optimizer)
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + value * len(batch)
        bar.set_postfix(
            loss=parts["loss"], ce=parts["retrieval"], mse=parts["distill"], uni=parts["uniformity"]
        )
    means = {key: value / len(examples) for key, value in sums.items()}
    means["examples_per_s"] = len(examples) / max(time.perf_counter() - start, 1e-9)
    return means


def validate(
    data: PreparedData, encoder: LLMSRecEncoder, config: LLMSRecTrainConfig
) -> tuple[dict, np.ndarray, dict[str, float]]:
    """Item table + `1+99` validation metrics on the shared candidates, and their throughputs."""
    start = time.perf_counter()
    table = compute_item_table(encoder, data.n_items, config.item_batch_size, config.progress)
    mid = time.perf_counter()
    scorer = LLMSRecScorer(encoder, table, config.user_batch_size)
    metrics = evaluate(
        data,
        scorer,
        "1+99",
        split="valid",
        seed=config.eval_seed,
        max_users=config.eval_max_users,
        progress=config.progress,
    )
    end = time.perf_counter()
    speed = {
        "items_per_s": data.n_items / (mid - start),
        "users_per_s": int(metrics["n_users"]) / (end - mid),
    }
    return metrics, table, speed


def _signature(data: PreparedData, config: LLMSRecTrainConfig) -> dict[str, Any]:
    keys = ("llm", "variant", "batch_size", "lr", "max_users", "seed", "history_len", "max_title_tokens")
    return {"dataset": data.name, "n_items": data.n_items} | {k: getattr(config, k) for k in keys}


def plot_curve(history: list[dict[str, Any]], path: Path) -> None:
    """training_curve.png: loss components and validation HR@10 / NDCG@10 per epoch."""
    from matplotlib.figure import Figure  # Agg canvas; no pyplot global state

    fig = Figure(figsize=(10, 4))
    loss_ax, valid_ax = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    for key in ("loss", "retrieval", "distill", "uniformity"):
        loss_ax.plot(epochs, [h["train"][key] for h in history], marker="o", label=key)
    for key in ("hr@10", "ndcg@10"):
        valid_ax.plot(epochs, [h["valid"][key] for h in history], marker="o", label=f"valid {key}")
    for ax, title in ((loss_ax, "training loss"), (valid_ax, "validation (1+99)")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)


def new_heads(data: PreparedData, teacher: SASRec, llm: LoadedLLM, seed: int) -> LLMSRec:
    """Heads sized from the teacher and the LLM; SASRec item table copied in; output tokens initialised."""
    cf_table = teacher.item_embeddings().detach().float().cpu()  # (n_items + 1, d_cf)
    if cf_table.shape[0] != data.n_items + 1:
        raise CheckpointError(
            f"the SASRec teacher has {cf_table.shape[0] - 1} items, the data {data.n_items}"
        )
    torch.manual_seed(seed)
    heads = LLMSRec(LLMSRecConfig(data.n_items, d_cf=cf_table.shape[1], llm_hidden=llm.spec["hidden_size"]))
    heads.set_cf_item_embeddings(cf_table)
    vocab = llm.model.get_input_embeddings().weight
    keep = torch.ones(vocab.shape[0], dtype=torch.bool)
    keep[list(llm.special_tokens.values())] = False  # added rows are placeholders, not real tokens
    heads.init_output_tokens(vocab[keep.to(vocab.device)], torch.Generator().manual_seed(seed))
    return heads


def _check_config(config: LLMSRecTrainConfig) -> None:
    positive = ("epochs", "batch_size", "n_negatives", "history_len", "max_title_tokens", "item_batch_size")
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if config.lr <= 0 or min(config.w_retrieval, config.w_distill, config.w_uniformity) < 0:
        raise ConfigError("--lr must be > 0 and the loss weights >= 0")
    if config.variant not in ("llmsrec", "llm-only"):
        raise ConfigError(f"--variant must be llmsrec or llm-only, got {config.variant!r}")


def _setup(
    data: PreparedData, sasrec_dir: Path, config: LLMSRecTrainConfig
) -> tuple[LoadedLLM, SASRec, LLMSRecEncoder]:
    """Teacher (eval mode, no grad), frozen LLM, fresh heads, and the encoder over the catalog."""
    device = torch.device(resolve_device(config.device))
    teacher = load_sasrec(Path(sasrec_dir), device=str(device))
    teacher.eval().requires_grad_(False)  # the official code left it in train mode (dropout noise)
    llm = load_llm(config.llm, device=str(device), dtype=config.dtype)
    heads = new_heads(data, teacher, llm, config.seed).to(device)
    prompt = PromptConfig(data.verb, data.noun, config.history_len, config.max_title_tokens)
    return llm, teacher, build_encoder(llm, heads, data, prompt)


def _end_epoch(out: Path, state: TrainState, record: dict[str, Any], save_best: Any) -> None:
    """Keep the best validation HR@10 (ties keep the earlier epoch); history and curve every epoch."""
    state.history.append(record)
    state.epoch = record["epoch"]
    if record["valid"]["hr@10"] > state.best_hr:
        state.best_hr, state.best_epoch, state.best_valid = (
            record["valid"]["hr@10"],
            state.epoch,
            record["valid"],
        )
        state.bad_epochs = 0
        save_best()
    else:
        state.bad_epochs += 1
    (out / "history.json").write_text(json.dumps(state.history, indent=2))
    plot_curve(state.history, out / "training_curve.png")


def train_llmsrec(
    data: PreparedData, sasrec_dir: Path, config: LLMSRecTrainConfig, out: Path
) -> dict[str, Any]:
    """Train, validate each epoch, keep the best HR@10 epoch in OUT; returns a summary."""
    _check_config(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    llm, teacher, encoder = _setup(data, sasrec_dir, config)
    heads, weights = encoder.heads, config.loss_weights()
    examples = training_examples(data, config.max_users, config.seed)
    assert_frozen(llm.model)
    optimizer = torch.optim.Adam([p for p in heads.parameters() if p.requires_grad], lr=config.lr)
    sig = _signature(data, config)
    state = load_state(out, heads, optimizer, sig) if config.resume else TrainState()
    use_teacher = teacher if weights.distill or weights.uniformity else None
    train_config = dataclasses.asdict(config) | {"resolved_weights": dataclasses.asdict(weights)}
    log.info("LLM-SRec (%s): %d training users, %d items", config.variant, len(examples), data.n_items)
    for epoch in range(state.epoch, config.epochs):
        if state.bad_epochs >= config.patience:
            break
        parts = run_epoch(encoder, use_teacher, examples, optimizer, config, epoch)
        valid, table, speed = validate(data, encoder, config)
        ckpt = checkpoint_config(
            data.name,
            llm.spec,
            heads,
            encoder.prompt,
            config.variant,
            train_config,
            sasrec_dir,
            epoch + 1,
            valid,
        )
        record = {"epoch": epoch + 1, "train": parts, "valid": valid, "speed": speed}
        _end_epoch(out, state, record, lambda: save_llmsrec(out, heads, table, ckpt))  # noqa: B023
        save_state(out, heads, optimizer, state, sig)
        log.info("epoch %d: loss %.4f, valid hr@10 %.4f", epoch + 1, parts["loss"], valid["hr@10"])
    last = state.history[-1] if state.history else {"train": {}, "speed": {}}
    return {
        "out": str(out),
        "variant": config.variant,
        "best_epoch": state.best_epoch,
        "valid": state.best_valid,
        "epochs_run": state.epoch,
        "examples_per_s": last["train"].get("examples_per_s"),
        "item_table_items_per_s": last.get("speed", {}).get("items_per_s"),
        "valid_users_per_s": last.get("speed", {}).get("users_per_s"),
    }
