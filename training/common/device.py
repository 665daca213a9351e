"""Device and dtype policy of the offline side: what `auto` means for a device and for an LLM's dtype.
Knows nothing about models or distributed runs."""

from __future__ import annotations

import torch

from training.common.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    """`auto` → cuda when available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto` → bfloat16 on a CUDA device that supports it, else float32."""
    if dtype == "auto":
        cuda_bf16 = device.startswith("cuda") and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"dtype {dtype!r} unknown; choose auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]
