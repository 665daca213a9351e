"""The one dtype policy for a frozen LLM, shared by serving and training: `auto` is bfloat16 on a CUDA device
that supports it, else float32; float16 only when asked for. And `LoadedLLM`, the one handle on a loaded LLM
that training and serving both pass around. Knows devices and dtypes, not model classes or files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch

DTypeName = Literal["float32", "bfloat16", "float16"]
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def cuda_supports_bf16(device: str) -> bool:
    """Whether `device` is a CUDA device whose GPU computes in bfloat16."""
    return device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_llm_dtype(setting: str, device: str, cuda_bf16: bool | None = None) -> DTypeName:
    """The dtype name of the LLM weights: an explicit setting as given; `auto` → bfloat16 where `device` is
    CUDA with bf16 support (cuda_bf16; None = ask torch), else float32 (float16 only when asked for).
    ValueError for any other name."""
    if setting == "auto":
        bf16 = cuda_supports_bf16(device) if cuda_bf16 is None else cuda_bf16 and device.startswith("cuda")
        return "bfloat16" if bf16 else "float32"
    if setting not in DTYPES:
        raise ValueError(f"dtype {setting!r} unknown; choose auto, {', '.join(DTYPES)}")
    return cast(DTypeName, setting)


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a resolved name (resolve_llm_dtype)."""
    return DTYPES[name]


@dataclass
class LoadedLLM:
    """A frozen causal LM (a transformers model, duck-typed), its tokenizer and the ids of the special tokens
    added to it; `location` is where it was loaded from, `dtype` the name (above) of its weights' dtype and
    `spec` the record a checkpoint keeps of it (id, path, hidden size, ...; training fills it)."""

    model: Any
    tokenizer: Any
    special_tokens: dict[str, int]
    spec: dict[str, Any] = field(default_factory=dict)
    location: str = ""
    dtype: str = ""

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)
