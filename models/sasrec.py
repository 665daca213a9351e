"""SASRec (Kang & McAuley 2018), pre-LN as in pmixer/SASRec.pytorch, causal + key-padding masked attention.
Inputs are LEFT-padded item-id tensors (0 = padding); it knows nothing of datasets, devices or files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class SASRecConfig:
    n_items: int  # item ids are 1..n_items; 0 is padding
    hidden: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    max_len: int = 128
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if min(self.n_items, self.hidden, self.n_blocks, self.n_heads, self.max_len) < 1:
            raise ValueError(f"SASRecConfig sizes must be >= 1: {self}")
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by n_heads ({self.n_heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class CausalSelfAttention(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.n_heads, self.dropout = config.n_heads, config.dropout
        self.qkv = nn.Linear(config.hidden, 3 * config.hidden)
        self.proj = nn.Linear(config.hidden, config.hidden)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x (B, T, D); allowed (B, 1, T, T) bool, True where query t may attend to key s."""
        B, T, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)  # 3 x (B, T, D)
        q, k, v = (
            t.view(B, T, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v)
        )  # (B, H, T, Dh)
        p = self.dropout if self.training else 0.0  # dropout on attention weights, as nn.MultiheadAttention
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)  # (B, H, T, Dh)
        return self.proj(y.transpose(1, 2).reshape(B, T, D))  # (B, T, D)


class PointWiseFeedForward(nn.Module):
    """Two position-wise linear maps (the official Conv1d with kernel 1), ReLU, dropout after each."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.fc1 = nn.Linear(config.hidden, config.hidden)
        self.fc2 = nn.Linear(config.hidden, config.hidden)
        self.drop1, self.drop2 = nn.Dropout(config.dropout), nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop2(self.fc2(F.relu(self.drop1(self.fc1(x)))))


class Block(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.hidden, eps=1e-8)
        self.attn = CausalSelfAttention(config)
        self.ffn_norm = nn.LayerNorm(config.hidden, eps=1e-8)
        self.ffn = PointWiseFeedForward(config)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), allowed)
        x = x + self.ffn(self.ffn_norm(x))
        return x * keep  # timeline mask: padded positions stay exactly zero


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.hidden, padding_idx=0)
        # Position max_len is the most recent item, 0 is padding: right-aligned, so left padding is invisible.
        self.pos_emb = nn.Embedding(config.max_len + 1, config.hidden, padding_idx=0)
        self.emb_dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.last_norm = nn.LayerNorm(config.hidden, eps=1e-8)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Official init: Xavier-normal on every matrix, PyTorch defaults elsewhere, padding rows zero."""
        for p in self.parameters():
            if p.dim() >= 2:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
            self.pos_emb.weight[0].zero_()

    def forward(self, seqs: torch.Tensor) -> torch.Tensor:
        """seqs (B, T) left-padded item ids, T <= max_len → (B, T, D) representation after each position."""
        T = seqs.shape[1]
        if self.config.max_len < T:
            raise ValueError(f"sequence length {T} exceeds max_len {self.config.max_len}")
        valid = seqs != 0  # (B, T)
        keep = valid.unsqueeze(-1).to(self.item_emb.weight.dtype)  # (B, T, 1)
        first = self.config.max_len - T + 1
        positions = torch.arange(first, first + T, device=seqs.device) * valid  # (B, T), 0 at padding
        x = self.item_emb(seqs) * math.sqrt(self.config.hidden) + self.pos_emb(positions)  # (B, T, D)
        x = self.emb_dropout(x) * keep
        allowed = self.attention_mask(valid)  # (B, 1, T, T)
        for block in self.blocks:
            x = block(x, allowed, keep)
        return self.last_norm(x)

    @staticmethod
    def attention_mask(valid: torch.Tensor) -> torch.Tensor:
        """(B, T) key validity → (B, 1, T, T): causal and non-padding keys; a position always sees itself,
        so rows of padding (left padding, or an empty history) never softmax over nothing (no NaN)."""
        T = valid.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()  # (T, T)
        eye = torch.eye(T, dtype=torch.bool, device=valid.device)  # (T, T)
        return (causal & valid[:, None, None, :]) | eye  # (B, 1, T, T)

    def user_vector(self, seqs: torch.Tensor) -> torch.Tensor:
        """(B, T) → (B, D): the representation at the last (most recent) position."""
        return self.forward(seqs)[:, -1, :]

    def item_embeddings(self) -> torch.Tensor:
        """(n_items + 1, D) item table; row 0 is padding."""
        return self.item_emb.weight

    def score(self, seqs: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """seqs (B, T), item_ids (B, C) → (B, C) dot products of user vector and candidate embeddings."""
        return self.score_users(self.user_vector(seqs), item_ids)

    def score_users(self, users: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """users (B, D) (from `user_vector`), item_ids (B, C) → (B, C) dot products with the candidates'
        embeddings."""
        return torch.einsum("bcd,bd->bc", self.item_emb(item_ids), users)  # (B, C)


def bce_loss(seq_out: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Official SASRec loss: seq_out, pos, neg (B, T, D) (outputs, positive / negative item embeddings),
    mask (B, T) bool of positions with a target. Mean BCE of positives as 1 + mean BCE of negatives as 0."""
    pos_logits = (seq_out * pos).sum(-1)[mask]  # (N,)
    neg_logits = (seq_out * neg).sum(-1)[mask]  # (N,)
    pos_loss = F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits))
    neg_loss = F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits))
    return pos_loss + neg_loss
