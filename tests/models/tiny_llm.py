"""A tiny, randomly initialised transformers Llama with a byte-level tokenizer, for fast LLM-SRec tests.

Built through training.common.llm (special tokens, freezing) exactly like the real LLM; no download, no cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from models.soft_prompt import add_special_tokens
from training.common.llm import LoadedLLM, freeze_llm, tiny_tokenizer


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
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
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
