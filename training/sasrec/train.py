"""Train SASRec (the CF-SRec teacher): BCE with one sampled negative per position, Adam, validation NDCG@10
on the shared candidates, best epoch kept, early stopping. The config: sasrec/config.py; the checkpoint
directory (write, read): sasrec/checkpoint.py; the scorer: sasrec/scorer.py.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from models.sasrec import SASRec, SASRecConfig, bce_loss
from training.common import distributed
from training.common.errors import DataError
from training.common.seeding import seed_everything
from training.data.dataset import PreparedData
from training.evaluation.protocol import evaluate
from training.evaluation.sharded import ShardedScorer
from training.sasrec.checkpoint import save_checkpoint
from training.sasrec.config import SASRecTrainConfig, check_config
from training.sasrec.scorer import SASRecScorer, pad_histories

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingSequences:
    """Each trainable user's train split s[:-2]: input s[:-3], next-item targets s[1:-2], right-aligned."""

    inputs: np.ndarray  # (U, L) int64, 0 = padding
    targets: np.ndarray  # (U, L) int64, 0 where there is no target
    seen_keys: np.ndarray  # sorted row * (n_items + 1) + item over each row's train items: never a negative
    n_items: int

    @classmethod
    def build(cls, data: PreparedData, max_len: int) -> TrainingSequences:
        train = [np.asarray(s[:-2], dtype=np.int64) for s in data.sequences]
        train = [t for t in train if len(t) >= 2]
        if not train:
            raise DataError(f"{data.root}: no user has a train sequence of 2+ items")
        inputs = pad_histories([t[:-1] for t in train], max_len)
        targets = pad_histories([t[1:] for t in train], max_len)
        rows = np.repeat(np.arange(len(train)), [len(t) for t in train])  # (N,)
        keys = np.unique(rows * (data.n_items + 1) + np.concatenate(train))
        if (np.bincount(keys // (data.n_items + 1)) >= data.n_items).any():
            raise DataError(f"{data.root}: a user has interacted with every item; no negative exists")
        return cls(inputs, targets, keys, data.n_items)

    def __len__(self) -> int:
        return len(self.inputs)

    def sample_negatives(self, rng: np.random.Generator, rows: np.ndarray) -> np.ndarray:
        """(B, L) uniform items outside each row's train items, 0 where there is no target."""
        targets = self.targets[rows]
        neg = rng.integers(1, self.n_items + 1, size=targets.shape)
        base = rows[:, None].astype(np.int64) * (self.n_items + 1)  # (B, 1)
        bad = self._seen(base + neg) & (targets != 0)
        while bad.any():  # rejection sampling, vectorised; ends since every row has unseen items
            neg[bad] = rng.integers(1, self.n_items + 1, size=int(bad.sum()))
            bad = self._seen(base + neg) & (targets != 0)
        return np.where(targets != 0, neg, 0)

    def _seen(self, keys: np.ndarray) -> np.ndarray:
        at = np.minimum(np.searchsorted(self.seen_keys, keys), len(self.seen_keys) - 1)
        return self.seen_keys[at] == keys


def batch_tensors(
    seqs: TrainingSequences,
    rows: np.ndarray,
    rng: np.random.Generator,
    device: torch.device,
    part: slice = slice(None),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, positives, negatives) of rows[part], each (B, T) with T trimmed to their longest row: left
    padding changes nothing in SASRec (masked keys, right-aligned positions), so the dropped columns are
    free. Negatives are drawn for all `rows` (one RNG stream however the batch is sharded), then cut."""
    neg = seqs.sample_negatives(rng, rows)[part]
    rows = rows[part]
    inputs, pos = seqs.inputs[rows], seqs.targets[rows]
    width = max(int((inputs != 0).sum(1).max()), 1)

    def tensor(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a[:, -width:])).to(device)  # (B, width)

    return tensor(inputs), tensor(pos), tensor(neg)


def run_epoch(
    model: SASRec,
    seqs: TrainingSequences,
    optimizer: torch.optim.Optimizer,
    config: SASRecTrainConfig,
    epoch: int,
) -> float:
    """One pass over the users in a seeded order; returns the mean loss."""
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(len(seqs))
    model.train()
    total = 0.0
    bar = tqdm(
        range(0, len(order), config.batch_size),
        desc=f"epoch {epoch}",
        leave=False,
        disable=not (config.progress and distributed.is_main()),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    for begin in bar:
        rows = order[begin : begin + config.batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = shard_loss(model, seqs, rows, rng, config.l2)
        if loss.requires_grad:
            loss.backward()
        loss = distributed.all_reduce_grads(params, loss.detach())  # the whole batch's loss
        optimizer.step()
        total += loss.item() * len(rows)
        bar.set_postfix(loss=f"{loss.item():.4f}")
    return total / len(order)


def shard_loss(
    model: SASRec, seqs: TrainingSequences, rows: np.ndarray, rng: np.random.Generator, l2: float
) -> torch.Tensor:
    """This rank's share of the batch loss: the BCE over its rows weighted by their share of the batch's
    target positions, so the shares sum over ranks to the one-process loss (on one process: the loss
    itself, times 1.0); the L2 term counts once, on rank 0."""
    device = model.item_emb.weight.device
    part = distributed.shard(len(rows))
    loss = torch.zeros((), device=device)
    if part.stop > part.start:
        inputs, pos, neg = batch_tensors(seqs, rows, rng, device, part)
        share = (pos != 0).sum().item() / int((seqs.targets[rows] != 0).sum())
        loss = bce_loss(model(inputs), model.item_emb(pos), model.item_emb(neg), pos != 0) * share
    else:
        seqs.sample_negatives(rng, rows)  # keep the RNG stream in step with the other ranks
    if l2 and distributed.is_main():
        loss = loss + l2 * model.item_emb.weight.norm()
    return loss


def validate(model: SASRec, data: PreparedData, config: SASRecTrainConfig) -> dict[str, Any]:
    scorer = SASRecScorer(model)
    metrics = evaluate(
        data,
        ShardedScorer(scorer) if distributed.world_size() > 1 else scorer,
        config.eval_protocol,
        split="valid",
        seed=config.eval_seed,
        max_users=config.eval_max_users,
        progress=False,
    )
    model.train()
    return metrics


@dataclass
class Progress:
    history: list[dict[str, Any]] = field(default_factory=list)
    best_ndcg: float = -1.0
    best_epoch: int = 0
    best_valid: dict[str, Any] = field(default_factory=dict)
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    stopped: str = "epochs"  # why training ended: epochs | patience | time budget
    seconds: float = 0.0

    def record(self, model: SASRec, epoch: int, loss: float, seconds: float, valid: dict | None) -> None:
        """Append the epoch; copy the weights when validation NDCG@10 improves (a tie keeps the earlier)."""
        self.history.append({"epoch": epoch, "loss": loss, "seconds": seconds, "valid": valid})
        if valid is not None and valid["ndcg@10"] > self.best_ndcg:
            self.best_ndcg, self.best_epoch, self.best_valid = valid["ndcg@10"], epoch, valid
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}


def fit(model: SASRec, data: PreparedData, seqs: TrainingSequences, config: SASRecTrainConfig) -> Progress:
    """The epoch loop: train, validate when due, keep the best weights, stop on patience or time budget."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    progress, start = Progress(), time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        tic = time.perf_counter()
        loss = run_epoch(model, seqs, optimizer, config, epoch)
        seconds = time.perf_counter() - tic
        out_of_time = distributed.any_rank(0 < config.time_budget_s <= time.perf_counter() - start)
        due = epoch % config.eval_every == 0 or epoch == config.epochs or out_of_time
        valid = validate(model, data, config) if due else None
        progress.record(model, epoch, loss, seconds, valid)
        if valid is None:
            continue
        log.info(
            "epoch %d: loss %.4f, valid ndcg@10 %.4f (best %.4f @ %d)",
            epoch,
            loss,
            valid["ndcg@10"],
            progress.best_ndcg,
            progress.best_epoch,
        )
        if epoch - progress.best_epoch >= config.patience or out_of_time:
            progress.stopped = "time budget" if out_of_time else "patience"
            log.info("stopping after epoch %d (%s)", epoch, progress.stopped)
            break
    progress.seconds = time.perf_counter() - start
    return progress


def _build_model(data: PreparedData, config: SASRecTrainConfig, device: torch.device) -> SASRec:
    """Seeded initialisation, identical on every rank (and broadcast from rank 0 to make sure); under
    torchrun each rank then draws its own dropout masks."""
    seed_everything(config.seed)
    model_config = SASRecConfig(
        data.n_items, config.hidden, config.n_blocks, config.n_heads, config.max_len, config.dropout
    )
    model = SASRec(model_config).to(device)
    distributed.broadcast_module(model)
    if distributed.world_size() > 1:
        torch.manual_seed(distributed.rank_seed(config.seed))
    return model


def train_sasrec(data: PreparedData, config: SASRecTrainConfig, out: Path) -> dict[str, Any]:
    """Train on `data`, keep the best validation NDCG@10 epoch, write the checkpoint to OUT; a summary.
    Under torchrun every rank runs this on its shard of each batch; rank 0 writes (common/distributed.py)."""
    check_config(config)
    with distributed.session(config.device) as rank:
        device = torch.device(rank.device)
        model = _build_model(data, config, device)
        seqs = TrainingSequences.build(data, config.max_len)
        log.info(
            "SASRec on %s: %d training users, %d items, %s, %d process(es)",
            *(data.name, len(seqs), data.n_items, device, rank.world),
        )
        threads = torch.get_num_threads()
        try:
            torch.set_num_threads(config.num_threads or threads)  # 1 beats 2 on a busy 2-core machine
            progress = fit(model, data, seqs, config)
        finally:
            torch.set_num_threads(threads)
        model.load_state_dict(progress.best_state)
        meta = {
            "format_version": 1,
            "dataset": data.name,
            "model": dataclasses.asdict(model.config),
            "train": dataclasses.asdict(config) | {"device": str(device), "world_size": rank.world},
            "best_epoch": progress.best_epoch,
            "valid": progress.best_valid,
            "epochs_run": progress.history[-1]["epoch"],
            "stopped": progress.stopped,
            "train_seconds": progress.seconds,
        }
        distributed.on_main(lambda: save_checkpoint(Path(out), model, meta, progress.history))
    keys = ("best_epoch", "valid", "epochs_run", "stopped", "train_seconds")
    return {"out": str(out)} | {k: meta[k] for k in keys}
