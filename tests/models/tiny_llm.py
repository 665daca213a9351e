"""A tiny, randomly initialised transformers Llama with a byte-level tokenizer, for fast LLM-SRec tests.

Built through training.common.llm (special tokens, freezing) exactly like the real LLM; no download, no cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from models.runtime import LoadedLLM
from models.soft_prompt import add_special_tokens
from training.common.llm import freeze_llm, tiny_llama, tiny_tokenizer


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a shared CPU extra threads make them 5-10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_llm(seed: int = 0, hidden: int = 32) -> LoadedLLM:
    """Random 2-layer Llama (hidden 32, GQA) + tokenizer, special tokens added, frozen."""
    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer), hidden, seed)
    special = add_special_tokens(model, tokenizer)
    freeze_llm(model)
    spec = {
        "id": "tiny-llama",
        "path": "",
        "dtype": "float32",
        "hidden_size": hidden,
        "special_tokens": special,
    }
    return LoadedLLM(model, tokenizer, special, spec)
