"""Device and dtype policy of the offline side: what `auto` means for a device, and the LLM dtype through the
one policy serving shares (models.runtime). Knows nothing about models or distributed runs."""

from __future__ import annotations

import torch

from models.runtime import resolve_llm_dtype, torch_dtype
from training.common.errors import ConfigError


def resolve_device(device: str) -> str:
    """`auto` → cuda when available, else cpu."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here")
    return device


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """`auto` → bfloat16 on a CUDA device that supports it, else float32 (models.runtime.resolve_llm_dtype);
    ConfigError naming the choices for an unknown name."""
    try:
        return torch_dtype(resolve_llm_dtype(dtype, device))
    except ValueError as err:
        raise ConfigError(str(err)) from None
