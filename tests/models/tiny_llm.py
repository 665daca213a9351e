"""A tiny, randomly initialised transformers Llama with a byte-level tokenizer, for fast LLM-SRec tests.

Built through training.llm (special tokens, freezing) exactly like the real LLM; no download, no cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from models.soft_prompt import add_special_tokens
from training.llm import LoadedLLM, freeze_llm


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a shared CPU extra threads make them 5-10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """One token per byte, BOS prepended (like Llama tokenizers)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<s>": 0, "</s>": 1, "<unk>": 2} | {ch: i + 3 for i, ch in enumerate(alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


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
