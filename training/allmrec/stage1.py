"""Train A-LLMRec stage 1: item/text autoencoders aligned over a frozen SASRec (every next-item position of
each user's train sequence, one sampled negative). Stage 2: allmrec/stage2.py; checkpoints:
allmrec/checkpoint.py; scoring: allmrec/scorer.py.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from models.allmrec import ALLMRecStage1, Stage1Config, stage1_loss
from models.sasrec import SASRec
from training.allmrec.checkpoint import STAGE1_FILE, plot_curves, save_module
from training.allmrec.config import Stage1TrainConfig, check_stage1
from training.allmrec.text_encoder import MODEL_NAME, TrainableTextEncoder, item_texts, load_text_embeddings
from training.common.device import resolve_device
from training.common.errors import CheckpointError
from training.common.seeding import seed_everything
from training.data.dataset import PreparedData
from training.evaluation.cold import read_cold_items
from training.sasrec.checkpoint import load_sasrec
from training.sasrec.train import TrainingSequences

log = logging.getLogger(__name__)


def cold_mask(data: PreparedData) -> torch.Tensor:
    """(n_items + 1,) bool: True for the items the dataset marks cold (cold_items.json), else all False."""
    mask = torch.zeros(data.n_items + 1, dtype=torch.bool)
    cold = read_cold_items(data.root)
    if cold:
        mask[torch.tensor(cold)] = True
    return mask


def new_stage1(
    data: PreparedData, teacher: SASRec, text: np.ndarray, config: Stage1TrainConfig
) -> ALLMRecStage1:
    cf = teacher.item_embeddings().detach().float().cpu()  # (n_items + 1, d_cf)
    if cf.shape[0] != data.n_items + 1:
        raise CheckpointError(f"the SASRec checkpoint has {cf.shape[0] - 1} items, the data {data.n_items}")
    torch.manual_seed(config.seed)
    stage1 = ALLMRecStage1(Stage1Config(data.n_items, cf.shape[1], text.shape[1], config.latent))
    stage1.set_tables(cf, torch.from_numpy(text), cold_mask(data))
    return stage1


def stage1_step(
    stage1: ALLMRecStage1,
    teacher: SASRec,
    batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    config: Stage1TrainConfig,
    text_encoder: TrainableTextEncoder | None = None,
    texts: list[str] | None = None,
) -> dict[str, torch.Tensor]:
    """Loss of one batch: SASRec outputs at every position with a target, the next item as positive, the
    sampled item as negative; positions whose negative is a cold item are dropped (no trained embedding)."""
    inputs, pos, neg = batch
    with torch.no_grad():
        users = teacher(inputs)  # (B, T, d_cf)
    keep = (pos != 0) & ~stage1.cold[neg]  # (B, T)
    pos_ids, neg_ids = pos[keep], neg[keep]  # (N,)
    pos_text = neg_text = None
    if text_encoder is not None and texts is not None:
        pos_text = text_encoder.embed([texts[i - 1] for i in pos_ids.tolist()])
        neg_text = text_encoder.embed([texts[i - 1] for i in neg_ids.tolist()])
    return stage1_loss(users[keep], stage1(pos_ids, pos_text), stage1(neg_ids, neg_text), config.weights())


@torch.no_grad()
def alignment_hr(stage1: ALLMRecStage1, n: int = 500, k: int = 10, seed: int = 0) -> float:
    """How well text latents find their own item: share of (up to n) warm items whose text latent has its
    item latent among the k nearest item latents (Euclidean) of those items. 1.0 = perfectly aligned."""
    warm = (~stage1.cold).nonzero().flatten()
    warm = warm[warm > 0]
    gen = torch.Generator().manual_seed(seed)
    ids = warm[torch.randperm(len(warm), generator=gen)[:n].to(warm.device)]
    out = stage1(ids)
    dist = torch.cdist(out.text_latent, out.item_latent)  # (n, n)
    own = dist.diagonal().unsqueeze(1)
    rank = (dist < own).sum(1)  # (n,) items strictly closer than the right one
    return float((rank < k).float().mean())


def run_stage1_epoch(
    stage1: ALLMRecStage1,
    teacher: SASRec,
    seqs: TrainingSequences,
    optimizer: torch.optim.Optimizer,
    config: Stage1TrainConfig,
    epoch: int,
    text_encoder: TrainableTextEncoder | None,
    texts: list[str] | None,
) -> dict[str, float]:
    """Every training user once (seeded order and negatives); mean loss terms and the alignment HR@10."""
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(len(seqs))
    device = stage1.cf_item_emb.device
    sums: dict[str, float] = {}
    steps = range(0, len(order), config.batch_size)
    bar = tqdm(steps, desc=f"stage1 epoch {epoch}", disable=not config.progress)
    for begin in bar:
        rows = order[begin : begin + config.batch_size]
        inputs, pos, neg = (torch.from_numpy(a).to(device) for a in _batch_arrays(seqs, rows, rng))
        parts = stage1_step(stage1, teacher, (inputs, pos, neg), config, text_encoder, texts)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        optimizer.step()
        for key, value in parts.items():
            sums[key] = sums.get(key, 0.0) + float(value.detach()) * len(rows)
        bar.set_postfix(loss=float(parts["loss"].detach()), match=float(parts["matching"].detach()))
    record: dict[str, float] = {"epoch": epoch} | {k: v / len(order) for k, v in sums.items()}
    record["alignment_hr@10"] = alignment_hr(stage1.eval())
    stage1.train()
    return record


def train_stage1(
    data: PreparedData, sasrec_dir: Path, config: Stage1TrainConfig, out: Path
) -> dict[str, Any]:
    """Train the autoencoders over the frozen SASRec; write OUT/stage1.safetensors + config.json."""
    check_stage1(config)
    device = torch.device(resolve_device(config.device))
    seed_everything(config.seed)
    teacher = load_sasrec(Path(sasrec_dir), device=str(device)).requires_grad_(False)
    text = load_text_embeddings(data, progress=config.progress)
    stage1 = new_stage1(data, teacher, text, config).to(device)
    text_encoder = TrainableTextEncoder(str(device)) if config.finetune_text_encoder else None
    texts = item_texts(data) if text_encoder else None
    params = list(stage1.parameters()) + (text_encoder.parameters() if text_encoder else [])
    optimizer = torch.optim.Adam(params, lr=config.lr)
    seqs = TrainingSequences.build(data, teacher.config.max_len)
    history: list[dict[str, Any]] = []
    start = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        record = run_stage1_epoch(stage1, teacher, seqs, optimizer, config, epoch, text_encoder, texts)
        history.append(record)
        log.info("stage1 epoch %d: %s", epoch, {k: round(v, 4) for k, v in record.items()})
    if text_encoder is not None:  # the tuned encoder's table replaces the cached one
        stage1.set_tables(stage1.cf_item_emb, torch.from_numpy(text_encoder.table(texts or [])).to(device))
    stage1.eval()
    meta = {
        "stage": "stage1",
        "model": dataclasses.asdict(stage1.config),
        "train": dataclasses.asdict(config),
        "dataset": data.name,
        "n_items": data.n_items,
        "sasrec_dir": str(Path(sasrec_dir).resolve()),
        "text_model": MODEL_NAME,
        "cold_items": int(stage1.cold.sum()),
        "history": history,
        "train_seconds": time.perf_counter() - start,
    }
    out = Path(out)
    save_module(out, STAGE1_FILE, stage1, meta)
    plot_curves(history, ["loss", "rec", "matching", "item_recon", "text_recon"], out / "training_curve.png")
    return {
        "out": str(out),
        "epochs": config.epochs,
        "last": history[-1],
        "train_seconds": meta["train_seconds"],
    }


def _batch_arrays(
    seqs: TrainingSequences, rows: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return seqs.inputs[rows], seqs.targets[rows], seqs.sample_negatives(rng, rows)
