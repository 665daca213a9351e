"""The LLM-SRec item table: every item's [ItemOut] vector, in large batches sorted by prompt length.
Under torchrun the batches are dealt round-robin to the ranks and the table is summed back on all of them."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from models.llmsrec import LLMSRecEncoder
from models.soft_prompt import length_batches, tokenize
from training.common import distributed

log = logging.getLogger(__name__)


def compute_item_table(
    encoder: LLMSRecEncoder, n_items: int, batch_size: int = 64, progress: bool = True
) -> np.ndarray:
    """(n_items + 1, user_dim) float32; row i = item i, row 0 = zeros (padding). With several ranks each
    computes the same batches it would alone (so every vector is bit-identical to one process's) and
    every rank returns the whole table."""
    ids = list(range(1, n_items + 1))
    lengths = [len(t) for t in tokenize(encoder.tokenizer, encoder.item_prompts(ids))]
    table = np.zeros((n_items + 1, encoder.heads.config.user_dim), dtype=np.float32)
    start = time.perf_counter()
    world, rank = distributed.world_size(), distributed.rank()
    batches = length_batches(lengths, batch_size)[rank::world]
    show = progress and distributed.is_main()
    with torch.inference_mode():
        for batch in tqdm(batches, desc="item table", unit="batch", disable=not show, leave=False):
            chosen = [ids[i] for i in batch]
            table[chosen] = encoder.item_vectors(chosen).float().cpu().numpy()
    table = distributed.all_reduce_array(table)  # every row is non-zero on one rank only: the sum is exact
    elapsed = time.perf_counter() - start
    log.info("item table: %d items in %.1f s (%.1f items/s)", n_items, elapsed, n_items / max(elapsed, 1e-9))
    return table
