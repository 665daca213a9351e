"""llmrec's cached LLM-SRec recipe (ours, not the paper's), end to end: the input side ([HistoryEmb]
projection, [UserOut]/[ItemOut] vectors; optionally adapted by a short end-to-end phase first) is frozen,
the frozen LLM's hidden states at the markers are cached once (training/llmsrec/cache.py) for every item,
several prefixes per user and the validation prompts, and the heads train on that cache
(training/llmsrec/heads.py). The item table is pred_item over the cached item states: the same hidden
states the serving path computes. Writes the same checkpoint layout as the paper's recipe, plus the hybrid
weight chosen on validation.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from training.data.dataset import PreparedData
from training.llmsrec.cache import (
    input_signature,
    item_hidden_states,
    prefix_ranks,
    user_hidden_states,
)
from training.llmsrec.checkpoint import checkpoint_config, save_llmsrec
from training.llmsrec.config import LLMSRecTrainConfig
from training.llmsrec.examples import Example, sample_negatives, training_examples
from training.llmsrec.heads import HeadTraining, HiddenCache, item_table, train_heads, valid_scores
from training.llmsrec.hybrid import ValidationSet, fit_hybrid, sasrec_valid_scores
from training.llmsrec.step import train_step
from training.sasrec.scorer import SASRecScorer

if TYPE_CHECKING:
    from models.llmsrec import LLMSRecEncoder
    from models.sasrec import SASRec

log = logging.getLogger(__name__)


def end_to_end_phase(
    encoder: LLMSRecEncoder, teacher: SASRec | None, data: PreparedData, config: LLMSRecTrainConfig
) -> float:
    """`config.e2e_steps` steps of the paper's end-to-end training (sampled negatives) before caching;
    adapts the input side. Returns the seconds spent."""
    if config.e2e_steps <= 0:
        return 0.0
    start = time.perf_counter()
    examples = training_examples(data, config.max_users, config.seed)
    heads = encoder.heads
    optimizer = torch.optim.Adam([p for p in heads.parameters() if p.requires_grad], lr=config.lr)
    rng = np.random.default_rng([config.seed, 1_000])
    order = rng.permutation(len(examples))
    steps = tqdm(range(config.e2e_steps), desc="end-to-end phase", disable=not config.progress)
    for step in steps:
        begin = (step * config.batch_size) % len(examples)
        batch = [examples[i] for i in order[begin : begin + config.batch_size]]
        negatives = [sample_negatives(rng, data.n_items, e.seen, config.n_negatives) for e in batch]
        parts = train_step(encoder, teacher, batch, negatives, config.loss_weights(), optimizer)
        steps.set_postfix(loss=parts["loss"])
    return time.perf_counter() - start


def build_cache(
    encoder: LLMSRecEncoder,
    teacher: SASRec | None,
    data: PreparedData,
    config: LLMSRecTrainConfig,
    cache_dir: Path,
) -> HiddenCache:
    """Hidden states of items, training prefixes and validation prompts (chunks on disk under cache_dir,
    keyed by everything that fixes them, so a rerun or a resumed run reuses them)."""
    ranks = prefix_ranks(data, config.prefixes_per_user, config.prefix_stride, config.max_users, config.seed)
    valid = ValidationSet.load(data, config.eval_max_users, config.eval_seed)
    keys = {"dataset": data.name, "n_items": data.n_items, "dtype": config.dtype}
    # item prompts do not depend on the user template or history length: one item cache serves both
    item_keys = keys | {"noun": encoder.prompt.noun, "max_title_tokens": encoder.prompt.max_title_tokens}
    item_dir = cache_dir / f"items-{input_signature(encoder, config.llm, item_keys, user_side=False)}"
    item_dir.mkdir(parents=True, exist_ok=True)
    folder = cache_dir / input_signature(encoder, config.llm, keys | {"prompt": repr(encoder.prompt)})
    folder.mkdir(parents=True, exist_ok=True)
    show, size = config.progress, config.cache_batch_size
    items, item_s = _timed(
        item_dir,
        "items",
        lambda: item_hidden_states(encoder, data.n_items, item_dir, config.item_batch_size, show),
    )
    examples = [e for rank in ranks for e in rank]
    users, train_s = _prefix_hidden_states(encoder, ranks, folder, config)
    valid_dir = folder / f"valid-{config.eval_max_users}-seed{config.eval_seed}"
    valid_dir.mkdir(exist_ok=True)
    valid_users, valid_s = _timed(
        valid_dir,
        "valid",
        lambda: user_hidden_states(
            encoder, "valid", valid.histories, valid.timestamps, valid_dir, size, show
        ),
    )
    return HiddenCache(
        items=items,
        users=users,
        targets=torch.tensor([e.target for e in examples], dtype=torch.long),
        seen=[e.seen for e in examples],
        teacher=None
        if teacher is None
        else torch.from_numpy(SASRecScorer(teacher).user_vectors([e.history for e in examples])),
        valid_users=valid_users,
        valid=valid,
        build_s=item_s + train_s + valid_s,
    )


def _prefix_hidden_states(
    encoder: LLMSRecEncoder, ranks: list[list[Example]], folder: Path, config: LLMSRecTrainConfig
) -> tuple[torch.Tensor, float]:
    """(N, H) the training prefixes' states, rank by rank; each rank's chunks live in their own folder
    (keyed by rank, stride, users and seed, not by the number of ranks), so more prefixes per user add
    to an existing cache instead of recomputing it. Returns the rows and the ranks' total build seconds."""
    rows, seconds = [], 0.0
    for rank, examples in enumerate(ranks):
        name = f"prefix-rank{rank:02d}-stride{config.prefix_stride}-users{config.max_users}-seed{config.seed}"
        rank_dir = folder / name
        rank_dir.mkdir(exist_ok=True)
        compute = functools.partial(
            user_hidden_states,
            encoder,
            "train",
            [e.history for e in examples],
            [e.timestamps for e in examples],
            rank_dir,
            config.cache_batch_size,
            config.progress,
        )
        part, spent = _timed(rank_dir, "train", compute)
        rows.append(part)
        seconds += spent
    return torch.cat(rows), seconds


def _timed(folder: Path, name: str, compute: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """Run `compute` and add its seconds to folder/build_seconds.json: the compute time this part of the
    cache has cost over every run that built it (a run that only reads it adds its reading time)."""
    start = time.perf_counter()
    rows = compute()
    path = folder / "build_seconds.json"
    spent = json.loads(path.read_text()) if path.is_file() else {}
    spent[name] = spent.get(name, 0.0) + time.perf_counter() - start
    path.write_text(json.dumps(spent))
    return rows, float(spent[name])


def head_training(config: LLMSRecTrainConfig) -> HeadTraining:
    return HeadTraining(
        epochs=config.head_epochs,
        lr=config.head_lr,
        batch_size=config.head_batch_size,
        patience=config.head_patience,
        input_dropout=config.input_dropout,
        weight_decay=config.weight_decay,
        score_distill=config.score_distill_weight(),
        temperature=config.score_distill_temperature,
        seed=config.seed,
        progress=config.progress,
    )


def train_cached(
    data: PreparedData,
    encoder: LLMSRecEncoder,
    teacher: SASRec,
    llm_spec: dict[str, Any],
    sasrec_dir: Path,
    config: LLMSRecTrainConfig,
    out: Path,
) -> dict[str, Any]:
    """The whole recipe; writes the checkpoint, history.json and training_curve.png to OUT."""
    weights = config.loss_weights()
    use_teacher = teacher if weights.distill or weights.uniformity else None
    start = time.perf_counter()
    e2e_s = end_to_end_phase(encoder, use_teacher, data, config)
    cache_dir = Path(config.cache_dir) if config.cache_dir else out / "cache"
    cache = build_cache(encoder, use_teacher, data, config, cache_dir)
    cache_s = time.perf_counter() - start - e2e_s
    log.info("cache: %d training prefixes, %d validation prompts", len(cache.targets), len(cache.valid_users))
    offset = e2e_s + max(cache_s, cache.build_s)  # a reused cache still cost its build time once
    result = train_heads(encoder.heads, cache, weights, head_training(config), clock_offset=offset)
    heads_s = time.perf_counter() - start - e2e_s - cache_s
    table = item_table(encoder.heads, cache.items)
    sasrec_scores = sasrec_valid_scores(SASRecScorer(teacher), cache.valid)
    hybrid, hybrid_valid = fit_hybrid(valid_scores(encoder.heads, cache), sasrec_scores, cache.valid)
    timing = {
        "e2e_s": e2e_s,
        "cache_s": cache_s,
        "cache_build_s": cache.build_s,
        "heads_s": heads_s,
        "total_s": time.perf_counter() - start,
        "n_prefixes": len(cache.targets),
        "examples_per_s": len(cache.targets) / max(cache.build_s, cache_s, 1e-9),
    }
    train_config = dataclasses.asdict(config) | {"resolved_weights": dataclasses.asdict(weights)}
    ckpt = checkpoint_config(
        data.name,
        llm_spec,
        encoder.heads,
        encoder.prompt,
        config.variant,
        train_config | {"recipe_timing": timing},
        sasrec_dir,
        result.best_epoch,
        result.best,
        hybrid=hybrid.to_dict() | {"valid": hybrid_valid},
    )
    save_llmsrec(out, encoder.heads, table, ckpt)
    (out / "history.json").write_text(json.dumps(result.history, indent=2))
    plot_time_curve(result.history, out / "training_curve.png", "cached recipe")
    return {
        "out": str(out),
        "variant": config.variant,
        "recipe": config.recipe,
        "best_epoch": result.best_epoch,
        "valid": result.best,
        "hybrid": ckpt["hybrid"],
        "timing": timing,
        "epochs_run": len(result.history),
        "examples_per_s": timing["examples_per_s"],
    }


def plot_time_curve(history: list[dict[str, Any]], path: Path, label: str) -> None:
    """Validation NDCG@10 against wall-clock seconds since the recipe started."""
    from matplotlib.figure import Figure  # Agg canvas; no pyplot global state

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot([h["seconds"] for h in history], [h["valid"]["ndcg@10"] for h in history], label=label)
    ax.set_xlabel("seconds since the start (cache included)")
    ax.set_ylabel("validation NDCG@10 (1+99)")
    ax.legend()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    tmp.replace(path)
