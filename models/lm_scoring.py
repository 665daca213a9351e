"""Text out of a frozen causal LM fed soft-prompt embeddings: LM loss on target tokens, log-likelihood of
many continuations per prompt (one prompt forward, its KV cache shared), greedy decoding. Duck-typed over
a transformers causal LM (`base_model`, `get_output_embeddings`, `past_key_values`); imports no loader.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.soft_prompt import PromptBatch, pad_ids

IGNORE = -100  # label of positions that carry no loss


def _decoder(model: nn.Module) -> nn.Module:
    return getattr(model, "base_model", model)


def _head(model: Any) -> nn.Module:
    return model.get_output_embeddings()


def target_logits(model: nn.Module, batch: PromptBatch, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Logits (N, V) at the positions that predict a labelled token, and those tokens (N,).

    labels (B, T) aligned with the batch, IGNORE where no loss; position t predicts token t + 1. The LM
    head runs only on those N positions (the full (B, T, V) logits would dominate time and memory)."""
    out = _decoder(model)(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
    )
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]  # (B, T, H)
    nxt = labels[:, 1:]  # (B, T - 1)
    where = nxt != IGNORE
    return _head(model)(hidden[:, :-1][where]), nxt[where]  # (N, V), (N,)


def _prompt_forward(model: nn.Module, batch: PromptBatch) -> tuple[Tensor, Any]:
    """Prompt forward with a KV cache; logits (B, V) at the last position (needs left padding)."""
    if not bool(batch.attention_mask[:, -1].all()):
        raise ValueError("prompts must be left-padded: the last position of every row must be a real token")
    out = _decoder(model)(
        inputs_embeds=batch.inputs_embeds,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=True,
    )
    return _head(model)(out.last_hidden_state[:, -1]).float(), out.past_key_values


def continuation_logprobs(
    model: nn.Module,
    batch: PromptBatch,
    continuations: Sequence[Sequence[Sequence[int]]],
    pad_id: int,
    max_pack: int = 32,
    rows_per_forward: int = 16,
) -> list[tuple[Tensor, Tensor]]:
    """For prompt b and each of its continuations (token ids): (summed log-prob, token count), as two
    (C_b,) tensors. The prompt runs once (KV cache); then up to `max_pack` of its continuations run packed
    in one row after it, each attending to the prompt and its own earlier tokens only (a 4D mask), so the
    numbers equal scoring every prompt + continuation on its own, at a fraction of the cost."""
    n_prompts = batch.inputs_embeds.shape[0]
    if len(continuations) != n_prompts:
        raise ValueError(f"{len(continuations)} continuation lists for {n_prompts} prompts")
    if any(len(c) == 0 for conts in continuations for c in conts):
        raise ValueError("every continuation needs at least one token")
    last, cache = _prompt_forward(model, batch)
    first_lp = torch.log_softmax(last, -1)  # (B, V)
    flat = [list(c) for conts in continuations for c in conts]
    starts = np.cumsum([0, *(len(conts) for conts in continuations)])
    rows = [  # (prompt, indices into flat) with at most max_pack continuations each
        (b, list(range(at, min(at + max_pack, int(starts[b + 1])))))
        for b in range(n_prompts)
        for at in range(int(starts[b]), int(starts[b + 1]), max_pack)
    ]
    groups = [rows[i : i + rows_per_forward] for i in range(0, len(rows), rows_per_forward)]
    sums = torch.zeros(len(flat), device=last.device)
    for group in groups:
        owners = [b for b, _ in group]
        part = cache if len(groups) == 1 else copy.deepcopy(cache)
        if owners != list(range(n_prompts)):
            part.batch_select_indices(torch.tensor(owners, device=last.device))
        conts = [[flat[i] for i in idx] for _, idx in group]
        scored = _score_packed(model, batch.attention_mask[owners], part, first_lp[owners], conts, pad_id)
        for (_, idx), row_sums in zip(group, scored, strict=True):
            sums[idx] = row_sums
    counts = torch.tensor([len(c) for c in flat], device=last.device)
    return [(sums[starts[b] : starts[b + 1]], counts[starts[b] : starts[b + 1]]) for b in range(n_prompts)]


def _score_packed(
    model: nn.Module,
    prompt_mask: Tensor,
    cache: Any,
    first_lp: Tensor,
    continuations: list[list[list[int]]],
    pad_id: int,
) -> list[Tensor]:
    """Row r packs continuations[r] after its cached prompt; their summed log-probs, one (k_r,) per row."""
    device = prompt_mask.device
    packed = [[t for c in conts for t in c] for conts in continuations]
    segments = [[k for k, c in enumerate(conts) for _ in c] for conts in continuations]
    offsets = [[t for c in conts for t in range(len(c))] for conts in continuations]
    ids, real = pad_ids(packed, pad_id, "right", device)  # (R, Q)
    seg, _ = pad_ids(segments, -1, "right", device)  # (R, Q) continuation index, -1 = padding
    off, _ = pad_ids(offsets, 0, "right", device)  # (R, Q) offset inside its continuation
    dtype = next(model.parameters()).dtype
    mask = _packed_mask(prompt_mask, seg, off, dtype)  # (R, 1, Q, P + Q)
    positions = prompt_mask.sum(-1, keepdim=True) + off  # (R, Q)
    out = _decoder(model)(
        input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True
    )
    hidden = out.last_hidden_state  # (R, Q, H)
    exists = real.bool()
    inner = (off > 0) & exists  # (R, Q) tokens predicted from the previous packed position
    token_lp = torch.zeros(ids.shape, device=device)  # (R, Q)
    prev = torch.log_softmax(_head(model)(hidden[:, :-1][inner[:, 1:]]).float(), -1)  # (M, V)
    token_lp[inner] = prev.gather(1, ids[inner].unsqueeze(1)).squeeze(1)
    firsts = (off == 0) & exists  # (R, Q) first tokens: predicted from the prompt's last position
    token_lp[firsts] = first_lp[firsts.nonzero()[:, 0]].gather(1, ids[firsts].unsqueeze(1)).squeeze(1)
    return [
        torch.zeros(len(conts), device=device).index_add_(0, seg[r][exists[r]], token_lp[r][exists[r]])
        for r, conts in enumerate(continuations)
    ]


def _packed_mask(prompt_mask: Tensor, seg: Tensor, off: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive (B, 1, Q, P + Q) mask: continuation token q sees the prompt's real tokens and the tokens
    of its own continuation up to itself. Padding rows see the prompt only (never an empty softmax)."""
    q = seg.shape[1]
    idx = torch.arange(q, device=seg.device)
    same = seg.unsqueeze(2) == seg.unsqueeze(1)  # (B, Q, Q)
    earlier = idx.view(1, q, 1) - idx.view(1, 1, q)  # (1, Q, Q) query index minus key index
    own = same & (earlier >= 0) & (earlier <= off.unsqueeze(2)) & (seg.unsqueeze(2) >= 0)  # (B, Q, Q)
    see_prompt = prompt_mask.bool().unsqueeze(1).expand(-1, q, -1)  # (B, Q, P)
    allowed = torch.cat([see_prompt, own], dim=2).unsqueeze(1)  # (B, 1, Q, P + Q)
    zero = torch.zeros((), dtype=dtype, device=seg.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def greedy_generate(
    model: nn.Module,
    batch: PromptBatch,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    stop_when: Callable[[list[int]], bool] | None = None,
) -> list[list[int]]:
    """Greedy decoding from left-padded prompt embeddings with a KV cache; a row stops at a stop id (not
    included), once `stop_when(its tokens so far)` is true, or after `max_new_tokens`."""
    last, cache = _prompt_forward(model, batch)
    mask, pos = batch.attention_mask, batch.position_ids[:, -1]
    stops = torch.tensor(list(stop_ids), device=mask.device)
    done = torch.zeros(mask.shape[0], dtype=torch.bool, device=mask.device)
    out: list[list[int]] = [[] for _ in range(mask.shape[0])]
    for _ in range(max_new_tokens):
        token = last.argmax(-1)  # (B,)
        done |= torch.isin(token, stops)
        for b in (~done).nonzero().flatten().tolist():
            out[b].append(int(token[b]))
            if stop_when is not None and stop_when(out[b]):
                done[b] = True
        if bool(done.all()):
            break
        token = torch.where(done, torch.full_like(token, pad_id), token)
        mask = torch.cat([mask, (~done).long().unsqueeze(-1)], dim=1)  # (B, T + 1)
        pos = pos + 1
        step = _decoder(model)(
            input_ids=token.unsqueeze(-1),
            attention_mask=mask,
            position_ids=pos.unsqueeze(-1),
            past_key_values=cache,
            use_cache=True,
        )
        last = _head(model)(step.last_hidden_state[:, -1]).float()
    return out
