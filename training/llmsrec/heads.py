"""The head training of llmrec's cached LLM-SRec recipe: `pred_user`, `pred_item` and `pred_user_CF2`
learn on cached hidden states with a full-catalogue softmax (a user's other train items masked) plus the
paper's distillation and uniformity terms, early-stopped on validation NDCG@10. The input side stays fixed
(it made the cache). Knows no LLM: the cache is built by training/llmsrec/cache.py, the run by
training/llmsrec/cached.py."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from models.llmsrec import LLMSRec, LossWeights, distill_loss, uniformity_loss
from training.llmsrec.hybrid import ValidationSet

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadTraining:
    """How the heads train on the cache (set from LLMSRecTrainConfig)."""

    epochs: int = 200
    lr: float = 1e-3
    batch_size: int = 256
    patience: int = 10
    input_dropout: float = 0.1
    weight_decay: float = 0.0
    score_distill: float = 0.0  # weight of KL(SASRec's catalogue softmax ‖ LLM-SRec's): ours, not the paper's
    temperature: float = 1.0  # of both softmaxes in that KL (the loss is scaled by its square)
    seed: int = 0
    progress: bool = True


@dataclass
class HiddenCache:
    """Everything the heads train on: hidden states (float32, CPU) and the targets around them."""

    items: torch.Tensor  # (n_items + 1, H), row 0 = padding
    users: torch.Tensor  # (N, H) training prefixes at [UserOut]
    targets: torch.Tensor  # (N,) item ids
    seen: Sequence[frozenset[int]]  # per example: the user's train items, never negatives
    teacher: torch.Tensor | None  # (N, d_cf) SASRec user vectors of the prefixes; None for llm-only
    valid_users: torch.Tensor  # (U, H) validation prompts at [UserOut]
    valid: ValidationSet
    build_s: float = 0.0  # compute seconds the cache cost to build (over every run that built a part)


@dataclass
class HeadResult:
    best: dict[str, Any]  # validation metrics of the kept epoch
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)


def catalogue_mask(seen: Sequence[frozenset[int]], targets: torch.Tensor, n_items: int) -> torch.Tensor:
    """(B, n_items) True where column i (item i + 1) must not be a negative of row b: the user's own train
    items other than the row's target. Every other item of the catalogue is a negative."""
    mask = torch.zeros((len(seen), n_items), dtype=torch.bool)
    rows = [b for b, s in enumerate(seen) for _ in s]
    cols = [i - 1 for s in seen for i in s]
    if rows:
        mask[rows, cols] = True
    mask[torch.arange(len(seen)), targets - 1] = False
    return mask


def catalogue_loss(
    users: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Softmax cross-entropy of raw dot products over the whole catalogue: users (B, D), items
    (n_items, D) for ids 1..n_items, targets (B,) ids, mask (B, n_items) True = excluded."""
    logits = (users @ items.T).masked_fill(mask, float("-inf"))  # (B, n_items)
    return F.cross_entropy(logits, targets - 1)


def _trainable(heads: LLMSRec) -> list[torch.nn.Parameter]:
    """The output side only: the input side fixed the cached hidden states and must not move."""
    heads.item_emb_proj.requires_grad_(False)
    heads.user_out.requires_grad_(False)
    heads.item_out.requires_grad_(False)
    return [p for m in (heads.pred_user, heads.pred_item, heads.pred_user_CF2) for p in m.parameters()]


@torch.no_grad()
def item_table(heads: LLMSRec, items: torch.Tensor) -> np.ndarray:
    """(n_items + 1, user_dim) float32: pred_item over the cached item states, row 0 zeros."""
    heads.eval()
    table = heads.item_vector(items).float().numpy()
    table[0] = 0.0
    return table


@torch.no_grad()
def valid_scores(heads: LLMSRec, cache: HiddenCache) -> np.ndarray:
    """(U, 100) LLM-SRec scores of the validation candidates from the cached states."""
    heads.eval()
    table = item_table(heads, cache.items)
    users = heads.user_vector(cache.valid_users).float().numpy()  # (U, D)
    return np.einsum("ud,ucd->uc", users, table[cache.valid.candidates])


def score_distill_loss(
    users: torch.Tensor,
    items: torch.Tensor,
    cf_users: torch.Tensor,
    cf_items: torch.Tensor,
    mask: torch.Tensor,
    temperature: float = 1.0,
) -> torch.Tensor:
    """KL(teacher ‖ student) of the catalogue softmaxes at `temperature`: SASRec's scores (cf_users (B, d_cf)
    · cf_items (n_items, d_cf)) against LLM-SRec's (users (B, D) · items (n_items, D)), masked items left
    out; times temperature² so the gradient's size does not depend on it (Hinton et al.)."""
    t = temperature
    student = ((users @ items.T) / t).masked_fill(mask, float("-inf")).log_softmax(-1)  # (B, n_items)
    teacher = ((cf_users @ cf_items.T) / t).masked_fill(mask, float("-inf")).log_softmax(-1)  # (B, n_items)
    keep = ~mask
    return (teacher.exp() * (teacher - student)).where(keep, 0.0).sum(-1).mean() * t * t


def _step(
    heads: LLMSRec, cache: HiddenCache, idx: torch.Tensor, weights: LossWeights, config: HeadTraining
) -> dict[str, torch.Tensor]:
    users = heads.user_vector(F.dropout(cache.users[idx], config.input_dropout, training=True))  # (B, D)
    items = heads.item_vector(F.dropout(cache.items[1:], config.input_dropout, training=True))  # (n_items, D)
    targets = cache.targets[idx]
    mask = catalogue_mask([cache.seen[i] for i in idx.tolist()], targets, items.shape[0])
    parts = {"retrieval": catalogue_loss(users, items, targets, mask)}
    zero = parts["retrieval"] * 0.0
    parts["distill"], parts["uniformity"], parts["score_distill"] = zero, zero, zero
    if cache.teacher is not None:
        teacher = heads.teacher_vector(cache.teacher[idx])  # (B, D)
        parts["distill"] = distill_loss(users, teacher)
        parts["uniformity"] = uniformity_loss(users) + uniformity_loss(teacher)
        if config.score_distill:
            cf_items = heads.cf_item_emb[1:]  # (n_items, d_cf) the teacher's own item table
            parts["score_distill"] = score_distill_loss(
                users, items, cache.teacher[idx], cf_items, mask, config.temperature
            )
    parts["loss"] = (
        weights.retrieval * parts["retrieval"]
        + weights.distill * parts["distill"]
        + weights.uniformity * parts["uniformity"]
        + config.score_distill * parts["score_distill"]
    )
    return parts


def train_heads(
    heads: LLMSRec, cache: HiddenCache, weights: LossWeights, config: HeadTraining, clock_offset: float = 0.0
) -> HeadResult:
    """Epochs over the cached examples; the best validation NDCG@10 epoch's heads are kept in `heads`.
    `history` rows carry `seconds` = clock_offset + time spent here (for NDCG-against-time plots)."""
    params = _trainable(heads)
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    gen = torch.Generator().manual_seed(config.seed)
    n, start = len(cache.targets), time.perf_counter()
    result = HeadResult(best={"ndcg@10": -1.0}, best_epoch=0)
    best_state, bad = copy.deepcopy(heads.state_dict()), 0
    bar = tqdm(range(config.epochs), desc="heads on the cache", disable=not config.progress, leave=False)
    for epoch in bar:
        heads.train()
        sums: dict[str, float] = {}
        for idx in torch.randperm(n, generator=gen).split(config.batch_size):
            parts = _step(heads, cache, idx, weights, config)
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            optimizer.step()
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) * len(idx)
        valid = cache.valid.metrics(valid_scores(heads, cache))
        seconds = clock_offset + time.perf_counter() - start
        train = {k: v / n for k, v in sums.items()}
        result.history.append({"epoch": epoch + 1, "train": train, "valid": valid, "seconds": seconds})
        bar.set_postfix(loss=train["loss"], ndcg=valid["ndcg@10"])
        if valid["ndcg@10"] > result.best["ndcg@10"]:
            result.best, result.best_epoch, bad = valid, epoch + 1, 0
            best_state = copy.deepcopy(heads.state_dict())
        else:
            bad += 1
            if bad >= config.patience:
                break
    heads.load_state_dict(best_state)
    heads.eval()
    log.info("heads: best valid ndcg@10 %.4f at epoch %d", result.best["ndcg@10"], result.best_epoch)
    return result
