"""The hidden-state cache of llmrec's cached LLM-SRec recipe: training prefixes (several per user), and the
frozen LLM's last-layer hidden states at [UserOut] / [ItemOut] for them, for every item and for the
validation prompts. Forward only, in length-sorted batches; written to disk in chunks so a long run
resumes where it stopped. Knows nothing about the heads' training."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from models.llmsrec import LLMSRecEncoder
from models.soft_prompt import length_batches, tokenize
from training.common.errors import ConfigError
from training.data.dataset import PreparedData, seeded_subset
from training.llmsrec.examples import Example

log = logging.getLogger(__name__)

CHUNK = 256  # prompts per file on disk (a resumed run redoes at most one chunk)


def prefix_ranks(
    data: PreparedData, per_user: int, stride: int, max_users: int, seed: int
) -> list[list[Example]]:
    """Training prefixes grouped by rank: rank r holds, for every user with enough items, the example whose
    target sits r * stride positions before the end of the train split s[:-2] (rank 0 = its last position),
    with the items before it as history. A user's whole train sequence is `seen` (never a negative).
    Ranks are the unit of the cache: a run with more prefixes per user reuses the ranks an earlier run
    computed."""
    if per_user < 1 or stride < 1:
        raise ConfigError(f"--prefixes-per-user ({per_user}) and --prefix-stride ({stride}) must be >= 1")
    ranks: list[list[Example]] = [[] for _ in range(per_user)]
    for u in seeded_subset(np.arange(data.n_users), max_users, seed):
        train = np.asarray(data.sequences[u][:-2])
        ts = data.timestamps[u]
        seen = frozenset(int(i) for i in train)
        for rank, j in enumerate(range(len(train) - 1, 0, -stride)[:per_user]):
            stamps = None if ts is None else np.asarray(ts[:j])
            ranks[rank].append(Example(train[:j], stamps, int(train[j]), seen))
    if not ranks[0]:
        raise ConfigError(f"dataset {data.name!r}: no user has a train sequence of 2+ items")
    return [r for r in ranks if r]


def input_signature(
    encoder: LLMSRecEncoder, llm_id: str, extra: dict[str, Any], user_side: bool = True
) -> str:
    """Hash of what fixes the hidden states: the LLM, `extra` (prompt settings) and the input-side
    weights ([UserOut] or [ItemOut] vector, the [HistoryEmb] projection, the CF item table)."""
    heads = encoder.heads
    digest = hashlib.sha256(json.dumps({"llm": llm_id} | extra, sort_keys=True).encode())
    out_vector = heads.user_out if user_side else heads.item_out
    for tensor in (out_vector, heads.cf_item_emb, *heads.item_emb_proj.state_dict().values()):
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def _cached_rows(
    name: str,
    n: int,
    lengths: Sequence[int],
    compute: Callable[[list[int]], torch.Tensor],
    cache_dir: Path | None,
    batch_size: int,
    progress: bool,
) -> torch.Tensor:
    """(n, H) float32 rows computed in length-sorted batches; chunks already on disk are loaded."""
    order = [i for batch in length_batches(lengths, batch_size) for i in batch]
    out: torch.Tensor | None = None
    bar = tqdm(total=n, desc=f"hidden states: {name}", unit="prompt", disable=not progress, leave=False)
    for start in range(0, n, CHUNK):
        chosen = order[start : start + CHUNK]
        path = None if cache_dir is None else cache_dir / f"{name}-{start // CHUNK:05d}.pt"
        if path is not None and path.is_file():
            rows = torch.load(path, weights_only=True)
        else:
            with torch.inference_mode():
                parts = [compute(chosen[b : b + batch_size]) for b in range(0, len(chosen), batch_size)]
            rows = torch.cat(parts).float().cpu()
            if path is not None:
                tmp = path.with_name(f".{path.name}.tmp")
                torch.save(rows, tmp)
                tmp.replace(path)
        if out is None:
            out = torch.zeros((n, rows.shape[1]))
        out[chosen] = rows
        bar.update(len(chosen))
    bar.close()
    assert out is not None, "no rows to compute"
    return out


def item_hidden_states(
    encoder: LLMSRecEncoder, n_items: int, cache_dir: Path | None, batch_size: int, progress: bool
) -> torch.Tensor:
    """(n_items + 1, H): row i = item i's hidden state at [ItemOut], row 0 zeros."""
    ids = list(range(1, n_items + 1))
    lengths = [len(t) for t in tokenize(encoder.tokenizer, encoder.item_prompts(ids))]
    start = time.perf_counter()
    rows = _cached_rows(
        "items",
        n_items,
        lengths,
        lambda c: encoder.item_hidden([ids[i] for i in c]),
        cache_dir,
        batch_size,
        progress,
    )
    log.info("item hidden states: %d in %.1f s", n_items, time.perf_counter() - start)
    return torch.cat([torch.zeros((1, rows.shape[1])), rows])


def user_hidden_states(
    encoder: LLMSRecEncoder,
    name: str,
    histories: Sequence[np.ndarray],
    timestamps: Sequence[np.ndarray | None],
    cache_dir: Path | None,
    batch_size: int,
    progress: bool,
) -> torch.Tensor:
    """(N, H): each history's hidden state at [UserOut], exactly as the serving path computes it."""
    lengths = [len(t) for t in tokenize(encoder.tokenizer, encoder.user_prompts(histories, timestamps))]
    start = time.perf_counter()
    rows = _cached_rows(
        name,
        len(histories),
        lengths,
        lambda c: encoder.user_hidden([histories[i] for i in c], [timestamps[i] for i in c]),
        cache_dir,
        batch_size,
        progress,
    )
    elapsed = time.perf_counter() - start
    log.info("%s hidden states: %d prompts in %.1f s", name, len(histories), elapsed)
    return rows
