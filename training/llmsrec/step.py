"""One LLM-SRec optimisation step: user, item and teacher vectors of a batch, the loss, the Adam step.
Under torchrun the batch is this rank's shard of a global batch and the loss its share
(training/common/distributed.py). Examples: training/llmsrec/examples.py.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from models.llmsrec import (
    LLMSRecEncoder,
    LossWeights,
    distill_loss,
    llmsrec_loss,
    retrieval_loss,
    uniformity_loss,
)
from models.sasrec import SASRec
from training.common import distributed
from training.llmsrec.examples import Example


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


def _vectors(
    encoder: LLMSRecEncoder, teacher: SASRec | None, batch: list[Example], negatives: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """users (B, D), items (B, 1 + K, D) positive first, teacher targets (B, D) or None; B may be 0."""
    heads = encoder.heads
    device = heads.cf_item_emb.device
    if not batch:  # an empty shard of a global batch smaller than the world
        empty = torch.zeros((0, heads.config.user_dim), device=device)
        return empty, empty[:, None], None if teacher is None else empty
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
    return users, items, target


def shard_loss(
    users: torch.Tensor, items: torch.Tensor, target: torch.Tensor | None, weights: LossWeights, n: int
) -> dict[str, torch.Tensor]:
    """This rank's share of `llmsrec_loss` over a global batch of n: the per-user means weighted by the
    shard's share of n (they sum over ranks), and uniformity over every rank's rows (pairs cross shards;
    only this rank's rows carry gradient, so the summed gradients are the one-process gradient)."""
    if distributed.world_size() == 1:
        return llmsrec_loss(users, items, target, weights)
    share, zero = len(users) / n, users.sum() * 0.0
    parts = {"retrieval": retrieval_loss(users, items) * share if len(users) else zero}
    parts["distill"], parts["uniformity"] = zero, zero
    if target is not None:
        parts["distill"] = distill_loss(users, target) * share if len(users) else zero
        gathered = [distributed.gather_with_grad(x, n) for x in (users, target)]
        parts["uniformity"] = uniformity_loss(gathered[0]) + uniformity_loss(gathered[1])
    elif weights.distill or weights.uniformity:
        raise ValueError("teacher vectors are required when distill or uniformity weights are non-zero")
    parts["loss"] = (
        weights.retrieval * parts["retrieval"]
        + weights.distill * parts["distill"]
        + weights.uniformity * parts["uniformity"]
    )
    return parts


def train_step(
    encoder: LLMSRecEncoder,
    teacher: SASRec | None,
    batch: list[Example],
    negatives: list[list[int]],
    weights: LossWeights,
    optimizer: torch.optim.Optimizer,
    n: int | None = None,
) -> dict[str, float]:
    """One Adam step; returns the loss components. Under torchrun `batch` is this rank's shard of a global
    batch of n users, and the step (gradients summed over ranks) equals one process's step on all n."""
    users, items, target = _vectors(encoder, teacher, batch, negatives)
    parts = shard_loss(users, items, target, weights, len(batch) if n is None else n)
    optimizer.zero_grad(set_to_none=True)
    if parts["loss"].requires_grad:
        parts["loss"].backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    shares = torch.stack([parts["retrieval"], parts["distill"]]).detach()
    retrieval, distill = distributed.all_reduce_grads(params, shares).tolist()  # type: ignore[union-attr]
    optimizer.step()
    if distributed.world_size() == 1:
        return {k: float(v.detach()) for k, v in parts.items()}
    uniformity = float(parts["uniformity"].detach())  # already over the whole batch on every rank
    loss = weights.retrieval * retrieval + weights.distill * distill + weights.uniformity * uniformity
    return {"loss": loss, "retrieval": retrieval, "distill": distill, "uniformity": uniformity}
