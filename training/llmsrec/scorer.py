"""The LLM-SRec scorer for the shared evaluation: batched user prompts against the precomputed item table,
nothing per candidate; `build_encoder` puts a frozen LLM, heads and a catalogue together, the same way for
training and scoring. Checkpoint files: training/llmsrec/checkpoint.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from models.llmsrec import LLMSRec, LLMSRecEncoder
from models.prompts import PromptConfig
from models.runtime import LoadedLLM
from training.common.errors import CheckpointError
from training.data.dataset import PreparedData
from training.llmsrec.checkpoint import load_checkpoint_llm, load_llmsrec


def build_encoder(llm: LoadedLLM, heads: LLMSRec, data: PreparedData, prompt: PromptConfig) -> LLMSRecEncoder:
    """The encoder over the dataset's catalog titles (items in id order)."""
    titles = [item.title for item in data.items]
    return LLMSRecEncoder(llm.model, llm.tokenizer, heads, titles, llm.special_tokens, prompt)


class LLMSRecScorer:
    """Scorer + user_vectors for training.evaluation: user prompts in length-sorted batches, dot products
    against the item table rows of the candidates. User vectors are memoised by prompt (text + shown item
    ids), so `evaluate(shuffle=True)` does not run the LLM twice on one history. The heads must not change
    while a scorer lives."""

    def __init__(
        self, encoder: LLMSRecEncoder, item_table: np.ndarray, batch_size: int = 16, max_cache: int = 200_000
    ) -> None:
        self.encoder, self.item_table, self.batch_size = encoder, item_table, batch_size
        self.max_cache = max_cache
        self._cache: dict[tuple[str, tuple[int, ...]], np.ndarray] = {}

    def user_vectors(
        self, histories: Sequence[np.ndarray], timestamps: Sequence[np.ndarray | None] | None = None
    ) -> np.ndarray:
        """(B, user_dim) float32, in input order."""
        ts = list(timestamps) if timestamps is not None else [None] * len(histories)
        shown = self.encoder.prompt.history_len
        keys = [
            (text, tuple(int(i) for i in list(h)[-shown:]))
            for text, h in zip(self.encoder.user_prompts(histories, ts), histories, strict=True)
        ]
        found = {key: self._cache[key] for key in keys if key in self._cache}
        todo = {key: i for i, key in enumerate(keys) if key not in found}  # one per distinct prompt
        order = sorted(todo.values(), key=lambda i: len(keys[i][0]))  # similar lengths batch together
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chosen = order[start : start + self.batch_size]
                vecs = self.encoder.user_vectors([histories[i] for i in chosen], [ts[i] for i in chosen])
                for i, vec in zip(chosen, vecs.float().cpu().numpy(), strict=True):
                    found[keys[i]] = vec
                    self._remember(keys[i], vec)
        return np.stack([found[key] for key in keys]).astype(np.float32)

    def _remember(self, key: tuple[str, tuple[int, ...]], vec: np.ndarray) -> None:
        if len(self._cache) >= self.max_cache:
            self._cache.pop(next(iter(self._cache)))  # oldest first
        self._cache[key] = vec

    def score(
        self,
        histories: Sequence[np.ndarray],
        candidates: np.ndarray,
        timestamps: Sequence[np.ndarray | None] | None = None,
    ) -> np.ndarray:
        """(B, C) raw dot products of user vectors with the candidates' item vectors."""
        users = self.user_vectors(histories, timestamps)  # (B, D)
        return np.einsum("bd,bcd->bc", users, self.item_table[np.asarray(candidates)])  # (B, C)


def load_llmsrec_scorer(
    ckpt: Path,
    data: PreparedData,
    device: str = "cpu",
    expect_variant: str | None = None,
    batch_size: int = 16,
    dtype: str | None = None,
) -> LLMSRecScorer:
    """Checkpoint + dataset → scorer; refuses a checkpoint of another dataset, size or variant.
    `dtype` None = the dtype recorded at training."""
    loaded = load_llmsrec(ckpt, device)
    if expect_variant is not None and loaded.variant != expect_variant:
        raise CheckpointError(f"{ckpt} holds variant {loaded.variant!r}, not {expect_variant!r}")
    if loaded.config["dataset"] != data.name or loaded.heads.config.n_items != data.n_items:
        raise CheckpointError(
            f"{ckpt} was trained on {loaded.config['dataset']!r} with {loaded.heads.config.n_items} items; "
            f"the data is {data.name!r} with {data.n_items}"
        )
    llm = load_checkpoint_llm(loaded, device, dtype)
    return LLMSRecScorer(build_encoder(llm, loaded.heads, data, loaded.prompt), loaded.item_table, batch_size)
