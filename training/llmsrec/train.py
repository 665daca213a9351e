"""Train LLM-SRec: only the heads learn, over a frozen LLM, distilled from a trained SASRec (eval mode).
Examples: each user's train sequence s[:-2]; input = all but its last item, target = its last item.
Validation HR@10 (1+99) drives early stopping; checkpoints are resumable. The config: llmsrec/config.py; the
step: llmsrec/step.py; the reading side: llmsrec/checkpoint.py and llmsrec/scorer.py; llmrec's cached recipe:
llmsrec/cached.py; several processes under torchrun: training/common/distributed.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from models.llmsrec import LLMSRec, LLMSRecConfig, LLMSRecEncoder
from models.prompts import PromptConfig, template_version
from models.runtime import LoadedLLM
from models.sasrec import SASRec
from training.common import distributed
from training.common.errors import CheckpointError, ConfigError
from training.common.llm import assert_frozen, load_llm
from training.data.dataset import PreparedData
from training.evaluation.protocol import evaluate
from training.evaluation.sharded import ShardedScorer
from training.llmsrec.cached import train_cached
from training.llmsrec.checkpoint import TrainState, checkpoint_config, load_state, save_llmsrec, save_state
from training.llmsrec.config import LLMSRecTrainConfig, check_config
from training.llmsrec.examples import Example, sample_negatives, training_examples
from training.llmsrec.item_table import compute_item_table
from training.llmsrec.scorer import LLMSRecScorer, build_encoder
from training.llmsrec.step import train_step
from training.sasrec.checkpoint import load_sasrec

log = logging.getLogger(__name__)


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
    show = config.progress and distributed.is_main()
    bar = tqdm(range(0, len(order), config.batch_size), desc=f"epoch {epoch + 1}", disable=not show)
    start = time.perf_counter()
    for begin in bar:
        batch = [examples[i] for i in order[begin : begin + config.batch_size]]
        negatives = [sample_negatives(rng, n_items, e.seen, config.n_negatives) for e in batch]
        part = distributed.shard(len(batch))  # negatives drawn for the whole batch on every rank, then cut
        parts = train_step(
            encoder, teacher, batch[part], negatives[part], config.loss_weights(), optimizer, len(batch)
        )
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
    """Item table + `1+99` validation metrics on the shared candidates, and their throughputs; under
    torchrun both are sharded across ranks and every rank gets the whole table and the same metrics."""
    start, show = time.perf_counter(), config.progress and distributed.is_main()
    table = compute_item_table(encoder, data.n_items, config.item_batch_size, show)
    mid = time.perf_counter()
    scorer = LLMSRecScorer(encoder, table, config.user_batch_size)
    metrics = evaluate(
        data,
        ShardedScorer(scorer) if distributed.world_size() > 1 else scorer,
        "1+99",
        split="valid",
        seed=config.eval_seed,
        max_users=config.eval_max_users,
        progress=show,
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


def _setup(
    data: PreparedData, sasrec_dir: Path, config: LLMSRecTrainConfig, device: torch.device
) -> tuple[LoadedLLM, SASRec, LLMSRecEncoder]:
    """Teacher (eval mode, no grad), frozen LLM, fresh heads (the same on every rank), and the encoder."""
    teacher = load_sasrec(Path(sasrec_dir), device=str(device))
    teacher.eval().requires_grad_(False)  # the official code left it in train mode (dropout noise)
    llm = load_llm(config.llm, device=str(device), dtype=config.dtype)
    heads = new_heads(data, teacher, llm, config.seed).to(device)
    distributed.broadcast_module(heads)
    prompt = PromptConfig(
        data.verb, data.noun, config.history_len, config.max_title_tokens, template_version(config.template)
    )
    return llm, teacher, build_encoder(llm, heads, data, prompt)


def _end_epoch(out: Path, state: TrainState, record: dict[str, Any], save_best: Any) -> None:
    """Keep the best validation HR@10 (ties keep the earlier epoch); history and curve every epoch.
    Every rank updates `state`; only rank 0 writes."""
    state.history.append(record)
    state.epoch = record["epoch"]
    improved = record["valid"]["hr@10"] > state.best_hr
    if improved:
        state.best_hr, state.best_epoch, state.best_valid = (
            record["valid"]["hr@10"],
            state.epoch,
            record["valid"],
        )
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1

    def write() -> None:
        if improved:
            save_best()
        (out / "history.json").write_text(json.dumps(state.history, indent=2))
        plot_curve(state.history, out / "training_curve.png")

    distributed.on_main(write)


def train_llmsrec(
    data: PreparedData, sasrec_dir: Path, config: LLMSRecTrainConfig, out: Path
) -> dict[str, Any]:
    """Train, validate each epoch, keep the best HR@10 epoch in OUT; returns a summary. Under torchrun
    every rank runs this on its shard of each batch; rank 0 writes (see training/common/distributed.py)."""
    check_config(config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with distributed.session(config.device) as rank:
        llm, teacher, encoder = _setup(data, sasrec_dir, config, torch.device(rank.device))
        if config.recipe == "cached":
            if rank.world > 1:
                raise ConfigError("--recipe cached runs in one process (its head training takes seconds)")
            return train_cached(data, encoder, teacher, llm.spec, sasrec_dir, config, out)
        heads, weights = encoder.heads, config.loss_weights()
        examples = training_examples(data, config.max_users, config.seed)
        assert_frozen(llm.model)
        optimizer = torch.optim.Adam([p for p in heads.parameters() if p.requires_grad], lr=config.lr)
        sig = _signature(data, config)
        state = load_state(out, heads, optimizer, sig) if config.resume else TrainState()
        use_teacher = teacher if weights.distill or weights.uniformity else None
        train_config = dataclasses.asdict(config) | {"resolved_weights": dataclasses.asdict(weights)}
        log.info(
            "LLM-SRec (%s): %d training users, %d items, %d process(es)",
            *(config.variant, len(examples), data.n_items, rank.world),
        )
        started = time.perf_counter() - (state.history[-1].get("seconds", 0.0) if state.history else 0.0)
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
            seconds = time.perf_counter() - started  # training + validation so far, resumed runs included
            record = {"epoch": epoch + 1, "train": parts, "valid": valid, "speed": speed, "seconds": seconds}
            _end_epoch(out, state, record, lambda: save_llmsrec(out, heads, table, ckpt))  # noqa: B023
            distributed.on_main(lambda: save_state(out, heads, optimizer, state, sig))
            log.info("epoch %d: loss %.4f, valid hr@10 %.4f", epoch + 1, parts["loss"], valid["hr@10"])
    return _summary(out, config, state)


def _summary(out: Path, config: LLMSRecTrainConfig, state: TrainState) -> dict[str, Any]:
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
