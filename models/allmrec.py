"""A-LLMRec (Kim et al. 2024): stage-1 autoencoders aligning frozen SASRec item embeddings with text
embeddings, stage-2 projections to the LLM width (user token F_U, item tokens F_I), and the losses as pure
functions. Tensors in, tensors out; prompt building and LLM calls live in models/allmrec_encoder.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class Stage1Config:
    """Stage-1 sizes: d_cf = SASRec hidden, d_text = sentence-embedding size (MiniLM 384), latent 128."""

    n_items: int
    d_cf: int = 64
    d_text: int = 384
    latent: int = 128

    def __post_init__(self) -> None:
        if min(self.n_items, self.d_cf, self.d_text, self.latent) < 1:
            raise ValueError(f"Stage1Config sizes must be >= 1: {self}")


@dataclass(frozen=True)
class Stage2Config:
    """Stage-2 sizes: F_U maps d_cf → llm_hidden, F_I maps latent → llm_hidden."""

    d_cf: int = 64
    latent: int = 128
    llm_hidden: int = 576

    def __post_init__(self) -> None:
        if min(self.d_cf, self.latent, self.llm_hidden) < 1:
            raise ValueError(f"Stage2Config sizes must be >= 1: {self}")


@dataclass(frozen=True)
class Stage1Weights:
    """Loss weights of the paper / official code: rec + matching + 0.5 item recon + 0.2 text recon."""

    rec: float = 1.0
    matching: float = 1.0
    item_recon: float = 0.5
    text_recon: float = 0.2


class AutoEncoder(nn.Module):
    """The official `two_layer_mlp`: Linear → sigmoid latent → Linear back to the input size."""

    def __init__(self, d_in: int, latent: int) -> None:
        super().__init__()
        self.enc = nn.Linear(d_in, latent)
        self.dec = nn.Linear(latent, d_in)

    def encode(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.enc(x))  # (N, d_in) → (N, latent)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.encode(x)  # (N, latent)
        return z, self.dec(z)  # (N, d_in)


@dataclass
class Stage1Output:
    """Both autoencoders on a batch of items: inputs, latents, reconstructions (all (N, ·))."""

    cf: Tensor
    text: Tensor
    item_latent: Tensor
    item_recon: Tensor
    text_latent: Tensor
    text_recon: Tensor


class ALLMRecStage1(nn.Module):
    """Item and text autoencoders, plus the frozen tables they read (buffers, saved with the weights):
    SASRec item embeddings, text embeddings, and which items are cold (no trained CF embedding)."""

    cf_item_emb: Tensor
    text_emb: Tensor
    cold: Tensor

    def __init__(self, config: Stage1Config) -> None:
        super().__init__()
        self.config = config
        self.item_ae = AutoEncoder(config.d_cf, config.latent)
        self.text_ae = AutoEncoder(config.d_text, config.latent)
        n = config.n_items + 1  # row 0 = padding
        self.register_buffer("cf_item_emb", torch.zeros(n, config.d_cf))
        self.register_buffer("text_emb", torch.zeros(n, config.d_text))
        self.register_buffer("cold", torch.zeros(n, dtype=torch.bool))

    @torch.no_grad()
    def set_tables(self, cf_item_emb: Tensor, text_emb: Tensor, cold: Tensor | None = None) -> None:
        """Copy the SASRec item table (n+1, d_cf), the text table (n+1, d_text) and the cold mask (n+1,)."""
        for name, value in (("cf_item_emb", cf_item_emb), ("text_emb", text_emb), ("cold", cold)):
            if value is None:
                continue
            buffer = getattr(self, name)
            if tuple(value.shape) != tuple(buffer.shape):
                raise ValueError(f"{name}: shape {tuple(value.shape)} != expected {tuple(buffer.shape)}")
            buffer.copy_(value.to(buffer.dtype))
        self.cf_item_emb[0] = 0
        self.text_emb[0] = 0

    def forward(self, item_ids: Tensor, text: Tensor | None = None) -> Stage1Output:
        """Both autoencoders on `item_ids` (N,); `text` (N, d_text) overrides the stored text table (used
        when the text encoder is fine-tuned)."""
        cf = self.cf_item_emb[item_ids]  # (N, d_cf)
        text = self.text_emb[item_ids] if text is None else text  # (N, d_text)
        item_latent, item_recon = self.item_ae(cf)
        text_latent, text_recon = self.text_ae(text)
        return Stage1Output(cf, text, item_latent, item_recon, text_latent, text_recon)

    def item_latents(self, item_ids: Tensor) -> Tensor:
        """(N,) → (N, latent): the item encoder for warm items, the text encoder for cold items."""
        warm = self.item_ae.encode(self.cf_item_emb[item_ids])  # (N, latent)
        from_text = self.text_ae.encode(self.text_emb[item_ids])  # (N, latent)
        return torch.where(self.cold[item_ids].unsqueeze(-1), from_text, warm)

    def imputed_cf(self, item_ids: Tensor) -> Tensor:
        """(N,) → (N, d_cf): the CF embedding stage 1 predicts from each item's text — the item decoder on
        the text encoder's latent (the rec loss scores SASRec users against decoded latents: rec_logits).
        What SASRec's score of a cold item is made from (models.allmrec_scoring.blend)."""
        return self.item_ae.dec(self.text_ae.encode(self.text_emb[item_ids]))

    @torch.no_grad()
    def imputed_table(self) -> Tensor:
        """(n + 1, d_cf) imputed_cf of every item id (row 0 too: padding, never scored)."""
        return self.imputed_cf(torch.arange(len(self.cold), device=self.cold.device))

    def text_latents(self, text: Tensor) -> Tensor:
        """Latents of new text embeddings (N, d_text): the path for an item the catalog lacks."""
        return self.text_ae.encode(text)


def _mlp(d_in: int, d_out: int, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_out), nn.LayerNorm(d_out), act, nn.Linear(d_out, d_out))


class ALLMRecStage2(nn.Module):
    """F_U (SASRec user vector → user soft token) and F_I (stage-1 latent → item soft token)."""

    def __init__(self, config: Stage2Config) -> None:
        super().__init__()
        self.config = config
        self.user_proj = _mlp(config.d_cf, config.llm_hidden, nn.LeakyReLU())  # F_U
        self.item_proj = _mlp(config.latent, config.llm_hidden, nn.GELU())  # F_I

    def user_rows(self, cf_user: Tensor) -> Tensor:
        return self.user_proj(cf_user)  # (B, d_cf) → (B, H)

    def item_rows(self, latent: Tensor) -> Tensor:
        return self.item_proj(latent)  # (N, latent) → (N, H)


def rec_logits(users: Tensor, decoded: Tensor) -> Tensor:
    """Official scaling: mean over dimensions of user ⊙ decoded item (= dot product / d_cf), (N,)."""
    return (users * decoded).mean(-1)


def stage1_loss(
    users: Tensor, pos: Stage1Output, neg: Stage1Output, weights: Stage1Weights
) -> dict[str, Tensor]:
    """Stage-1 loss terms and their weighted total; each term is the positive's plus the negative's part.

    users (N, d_cf): SASRec user vectors; pos/neg: the autoencoders on the next item and a sampled negative.
    rec = BCE(logit(user, decoded pos), 1) + BCE(logit(user, decoded neg), 0); matching = MSE(item latent,
    text latent); recon = MSE(decoded, input) for items and (detached) texts.
    """
    pos_logits, neg_logits = rec_logits(users, pos.item_recon), rec_logits(users, neg.item_recon)
    parts = {
        "rec": F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits))
        + F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits)),
        "matching": F.mse_loss(pos.item_latent, pos.text_latent)
        + F.mse_loss(neg.item_latent, neg.text_latent),
        "item_recon": F.mse_loss(pos.item_recon, pos.cf) + F.mse_loss(neg.item_recon, neg.cf),
        "text_recon": F.mse_loss(pos.text_recon, pos.text.detach())
        + F.mse_loss(neg.text_recon, neg.text.detach()),
    }
    total = (
        weights.rec * parts["rec"]
        + weights.matching * parts["matching"]
        + weights.item_recon * parts["item_recon"]
        + weights.text_recon * parts["text_recon"]
    )
    return {"loss": total, **parts}


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean token cross-entropy of (N, V) logits at the target positions against (N,) token ids."""
    return F.cross_entropy(logits.float(), targets)
