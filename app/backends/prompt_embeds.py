"""Prompt embeddings on their way to vLLM: the checks every tensor passes first (a malformed one can crash
the engine) and the completions API's wire format. Pure torch; knows no engine, model or HTTP."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from models.soft_prompt import PromptBatch


class PromptEmbedsError(ValueError):
    """Prompt embeddings that must not reach vLLM (a malformed tensor can crash the engine)."""


def validate_prompt_embeds(
    embeds: Sequence[Any], *, hidden: int, dtype: torch.dtype, max_len: int | None = None
) -> list[Tensor]:
    """Dense, finite (T, hidden) tensors of `dtype`, 1 <= T <= max_len, as contiguous CPU copies;
    PromptEmbedsError naming the first bad prompt otherwise."""
    if len(embeds) == 0:
        raise PromptEmbedsError("no prompt embeddings: the batch is empty")
    rows = []
    for i, embed in enumerate(embeds):
        where = f"prompt_embeds[{i}]"
        if not isinstance(embed, Tensor):
            raise PromptEmbedsError(f"{where} is a {type(embed).__name__}, not a torch.Tensor")
        if embed.layout != torch.strided:
            raise PromptEmbedsError(f"{where} has layout {embed.layout}; only dense tensors are sent")
        if embed.dim() != 2:
            raise PromptEmbedsError(f"{where} has shape {tuple(embed.shape)}; expected (seq_len, {hidden})")
        if embed.shape[0] == 0:
            raise PromptEmbedsError(f"{where} is empty (0 positions)")
        if embed.shape[1] != hidden:
            raise PromptEmbedsError(f"{where} has hidden size {embed.shape[1]}; the LLM's is {hidden}")
        if max_len is not None and embed.shape[0] > max_len:
            raise PromptEmbedsError(f"{where} has {embed.shape[0]} positions; the engine takes {max_len}")
        if embed.dtype != dtype:
            raise PromptEmbedsError(f"{where} has dtype {embed.dtype}; the engine runs {dtype}")
        if not bool(torch.isfinite(embed).all()):
            raise PromptEmbedsError(f"{where} contains NaN or infinite values")
        rows.append(embed.detach().to("cpu").contiguous())
    return rows


def check_last_marker(batch: PromptBatch, marker_id: int) -> None:
    """LAST pooling reads the final position, so every prompt must end with the marker token."""
    for b in range(batch.input_ids.shape[0]):
        ids = batch.input_ids[b][batch.attention_mask[b].bool()]
        if len(ids) == 0 or int(ids[-1]) != marker_id:
            raise PromptEmbedsError(
                f"prompt {b} does not end with token {marker_id}; LAST pooling would miss it"
            )


def encode_prompt_embeds(embed: Tensor) -> str:
    """The completions API's `prompt_embeds` value: base64 of torch.save of one (T, H) tensor."""
    buffer = io.BytesIO()
    torch.save(embed, buffer)
    return base64.b64encode(buffer.getvalue()).decode("ascii")
