"""Soft prompts for a frozen causal LM: add the special tokens, pad token ids, splice soft rows at marker
tokens, masked forward, read the last-layer hidden state at a marker. Duck-typed over tokenizer and model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from models.prompts import MARKER_TOKENS, PAD_KEY, PAD_TOKEN

PaddingSide = Literal["left", "right"]


def add_special_tokens(model: Any, tokenizer: Any) -> dict[str, int]:
    """Add the marker tokens (and a pad token if missing) in a fixed order; resize the embeddings.

    Shared by the training loader and the service's loader, so both get the same ids (to be checked
    against the record in the checkpoint / manifest). New embedding rows are set to the mean row
    (deterministic); they are never read: marker positions get soft rows, pad positions are masked.
    Returns {token: id, "pad": id}.
    """
    tokenizer.add_special_tokens(
        {"additional_special_tokens": list(MARKER_TOKENS)}, replace_additional_special_tokens=False
    )
    if tokenizer.pad_token is None:
        tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})
    old = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            weight = model.get_input_embeddings().weight
            weight[old:] = weight[:old].mean(0)
    record = {tok: int(tokenizer.convert_tokens_to_ids(tok)) for tok in MARKER_TOKENS}
    record[PAD_KEY] = int(tokenizer.pad_token_id)
    return record


@dataclass
class PromptBatch:
    """A padded batch of prompts, ready for `model(inputs_embeds=...)`."""

    input_ids: Tensor  # (B, T) token ids; markers still visible here
    attention_mask: Tensor  # (B, T) 1 = real token
    position_ids: Tensor  # (B, T) 0.. over real tokens, whatever the padding side
    inputs_embeds: Tensor  # (B, T, H) with soft rows spliced in

    def per_prompt(self) -> list[Tensor]:
        """Unpadded (T_i, H) embeddings per prompt, e.g. for an engine that takes `prompt_embeds`."""
        keep = self.attention_mask.bool()
        return [self.inputs_embeds[b][keep[b]] for b in range(keep.shape[0])]


def tokenize(tokenizer: Callable[..., Any], texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, with the tokenizer's own special tokens (e.g. BOS) as the LLM expects."""
    return [list(ids) for ids in tokenizer(list(texts))["input_ids"]]


def pad_ids(
    ids: Sequence[Sequence[int]], pad_id: int, side: PaddingSide, device: torch.device | str
) -> tuple[Tensor, Tensor]:
    """Pad to the longest prompt on `side`; returns (input_ids, attention_mask), both (B, T) int64."""
    width = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for b, row in enumerate(ids):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        input_ids[b, span] = torch.tensor(list(row), dtype=torch.long)
        mask[b, span] = 1
    return input_ids.to(device), mask.to(device)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions counted over real tokens only, so left padding gives the unbatched positions."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)


def splice_rows(embeds: Tensor, input_ids: Tensor, marker_id: int, rows: Tensor) -> Tensor:
    """Replace the embedding at every `marker_id` position by `rows` (N, H), in row-major order.

    A single (H,) row is broadcast to every marker. Returns a new tensor; gradients reach `rows`.
    """
    where = input_ids == marker_id  # (B, T)
    n = int(where.sum())
    if rows.dim() == 1:
        rows = rows.unsqueeze(0).expand(n, -1)  # (N, H)
    if rows.shape[0] != n:
        raise ValueError(f"{rows.shape[0]} soft rows for {n} marker tokens (id {marker_id})")
    return embeds.masked_scatter(where.unsqueeze(-1), rows.to(embeds.dtype))  # (B, T, H)


def build_prompt_batch(
    ids: Sequence[Sequence[int]],
    embedding: nn.Module,
    pad_id: int,
    soft_rows: Mapping[int, Tensor],
    side: PaddingSide = "left",
) -> PromptBatch:
    """Pad, embed with the LLM's input embedding, and splice soft rows {marker id: rows}."""
    device = next(embedding.parameters()).device
    input_ids, mask = pad_ids(ids, pad_id, side, device)
    embeds = embedding(input_ids)  # (B, T, H)
    for marker_id, rows in soft_rows.items():
        embeds = splice_rows(embeds, input_ids, marker_id, rows)
    return PromptBatch(input_ids, mask, position_ids_from_mask(mask), embeds)


def last_hidden_states(model: nn.Module, batch: PromptBatch) -> Tensor:
    """Last-layer (final-norm) hidden states (B, T, H) of the decoder; skips the LM head's logits."""
    decoder = getattr(model, "base_model", model)
    out = decoder(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


def hidden_at_marker(model: nn.Module, batch: PromptBatch, marker_id: int) -> Tensor:
    """Hidden state (N, H) at each `marker_id` position, row-major (one per prompt for [UserOut])."""
    hidden = last_hidden_states(model, batch)  # (B, T, H)
    return hidden[batch.input_ids == marker_id]  # (N, H)


def length_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first) so padding stays small."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
