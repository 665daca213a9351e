"""LLM-SRec: the trainable heads around a frozen LLM, the loss terms (pure functions), and the encoder
that turns histories and items into 128-d vectors. The encoder is the one path for training, evaluation
and serving; it takes an already loaded (model, tokenizer) and knows no loader, file or device policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.prompts import (
    HISTORY_EMB,
    ITEM_OUT,
    MARKER_TOKENS,
    PAD_KEY,
    USER_OUT,
    PromptConfig,
    cut_history,
    item_prompt,
    truncate_titles,
    user_prompt,
)
from models.soft_prompt import PaddingSide, PromptBatch, build_prompt_batch, hidden_at_marker, tokenize


@dataclass(frozen=True)
class LLMSRecConfig:
    """Sizes of the heads (DESIGN §2): d_cf = SASRec hidden, llm_hidden = the LLM's hidden size."""

    n_items: int
    d_cf: int = 64
    llm_hidden: int = 576
    user_dim: int = 128
    mlp_hidden: int = 2048
    cf_hidden: int = 128


def _mlp(d_in: int, d_mid: int, d_out: int, act: nn.Module) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_mid), nn.LayerNorm(d_mid), act, nn.Linear(d_mid, d_out))


class LLMSRec(nn.Module):
    """Trainable parts: projections, output-token vectors; plus the frozen SASRec item table as a buffer."""

    cf_item_emb: Tensor

    def __init__(self, config: LLMSRecConfig) -> None:
        super().__init__()
        self.config = config
        h = config.llm_hidden
        self.item_emb_proj = _mlp(config.d_cf, h, h, nn.LeakyReLU())
        self.pred_user = _mlp(h, config.mlp_hidden, config.user_dim, nn.LeakyReLU())
        self.pred_item = _mlp(h, config.mlp_hidden, config.user_dim, nn.LeakyReLU())
        self.pred_user_CF2 = _mlp(config.d_cf, config.cf_hidden, config.user_dim, nn.GELU())  # training only
        self.user_out = nn.Parameter(torch.zeros(h))
        self.item_out = nn.Parameter(torch.zeros(h))
        # SASRec item embeddings (n_items + 1, d_cf), row 0 = padding; saved with the heads, never trained.
        self.register_buffer("cf_item_emb", torch.zeros(config.n_items + 1, config.d_cf))

    @torch.no_grad()
    def set_cf_item_embeddings(self, table: Tensor) -> None:
        """Copy the teacher's item table (n_items + 1, d_cf); row 0 is forced to zero."""
        if tuple(table.shape) != tuple(self.cf_item_emb.shape):
            raise ValueError(
                f"CF item table {tuple(table.shape)} != expected {tuple(self.cf_item_emb.shape)}"
            )
        self.cf_item_emb.copy_(table)
        self.cf_item_emb[0] = 0

    @torch.no_grad()
    def init_output_tokens(self, token_embeddings: Tensor, generator: torch.Generator | None = None) -> None:
        """[UserOut]/[ItemOut] vectors ~ N(mean, std) of the LLM's token embeddings, per dimension."""
        emb = token_embeddings.detach().float().cpu()  # (V, H)
        mean, std = emb.mean(0), emb.std(0)
        for vec in (self.user_out, self.item_out):
            noise = torch.randn(vec.shape, generator=generator)
            vec.copy_((mean + std * noise).to(vec.device, vec.dtype))

    def history_rows(self, item_ids: Tensor) -> Tensor:
        """Soft rows for [HistoryEmb]: item_emb_proj(SASRec embedding), (N,) → (N, H)."""
        return self.item_emb_proj(self.cf_item_emb[item_ids])

    def user_vector(self, hidden: Tensor) -> Tensor:
        return self.pred_user(hidden)  # (B, H) → (B, user_dim)

    def item_vector(self, hidden: Tensor) -> Tensor:
        return self.pred_item(hidden)  # (N, H) → (N, user_dim)

    def teacher_vector(self, cf_user: Tensor) -> Tensor:
        return self.pred_user_CF2(cf_user)  # (B, d_cf) → (B, user_dim)


@dataclass(frozen=True)
class LossWeights:
    retrieval: float = 1.0
    distill: float = 1.0
    uniformity: float = 1.0


def retrieval_loss(users: Tensor, items: Tensor) -> Tensor:
    """Cross-entropy of raw dot products; users (B, D), items (B, 1 + K, D) with the positive first."""
    logits = torch.einsum("bd,bkd->bk", users, items)  # (B, 1 + K)
    return F.cross_entropy(logits, torch.zeros(len(users), dtype=torch.long, device=users.device))


def distill_loss(users: Tensor, teacher: Tensor) -> Tensor:
    """MSE between L2-normalised student and teacher user vectors, mean over all elements."""
    return F.mse_loss(F.normalize(users, dim=-1), F.normalize(teacher, dim=-1))


def uniformity_loss(x: Tensor, t: float = 2.0) -> Tensor:
    """mean_{i≠j} exp(-t‖x̂_i − x̂_j‖²) over L2-normalised rows; 0 for fewer than two rows."""
    if x.shape[0] < 2:
        return x.sum() * 0.0
    z = F.normalize(x, dim=-1)
    sq = (2.0 - 2.0 * z @ z.T).clamp(min=0.0)  # (B, B) squared distances of unit vectors, no sqrt
    off = ~torch.eye(len(z), dtype=torch.bool, device=z.device)
    return torch.exp(-t * sq[off]).mean()


def llmsrec_loss(
    users: Tensor, items: Tensor, teacher: Tensor | None, weights: LossWeights
) -> dict[str, Tensor]:
    """Weighted total and its components; `teacher` may be None when distill and uniformity weigh 0."""
    parts = {"retrieval": retrieval_loss(users, items)}
    zero = parts["retrieval"] * 0.0
    if teacher is None:
        if weights.distill or weights.uniformity:
            raise ValueError("teacher vectors are required when distill or uniformity weights are non-zero")
        parts["distill"], parts["uniformity"] = zero, zero
    else:
        parts["distill"] = distill_loss(users, teacher)
        parts["uniformity"] = uniformity_loss(users) + uniformity_loss(teacher)
    total = (
        weights.retrieval * parts["retrieval"]
        + weights.distill * parts["distill"]
        + weights.uniformity * parts["uniformity"]
    )
    return {"loss": total, **parts}


History = Sequence[int] | np.ndarray  # item ids, oldest first


class LLMSRecEncoder:
    """Histories / item ids → prompt embeddings → frozen LLM → heads → 128-d vectors.

    `titles[i - 1]` is item i's title. Gradients flow to the heads when called outside `no_grad`.
    """

    def __init__(
        self,
        llm: nn.Module,
        tokenizer: Callable[..., Any],
        heads: LLMSRec,
        titles: Sequence[str],
        special_tokens: Mapping[str, int],
        prompt: PromptConfig,
        padding_side: PaddingSide = "left",
    ) -> None:
        self.llm, self.tokenizer, self.heads, self.prompt = llm, tokenizer, heads, prompt
        self.embedding: nn.Module = llm.get_input_embeddings()  # type: ignore[operator]
        self.special = dict(special_tokens)
        self._check_special_tokens()
        self.padding_side = padding_side
        self.titles = ["", *truncate_titles(titles, tokenizer, prompt.max_title_tokens)]

    @property
    def llm_dtype(self) -> torch.dtype:
        """dtype of the LLM's input embeddings (soft rows are cast to it)."""
        return next(self.embedding.parameters()).dtype

    def user_prompts(
        self, histories: Sequence[History], timestamps: Sequence[Any] | None = None
    ) -> list[str]:
        texts = []
        for b, history in enumerate(histories):
            items, dates = cut_history(
                history, None if timestamps is None else timestamps[b], self.prompt.history_len
            )
            if not items:
                raise ValueError(f"history {b} is empty; LLM-SRec needs at least one item")
            texts.append(user_prompt([self._title(i) for i in items], dates, self.prompt))
        return texts

    def item_prompts(self, item_ids: Sequence[int]) -> list[str]:
        return [item_prompt(self._title(int(i)), self.prompt) for i in item_ids]

    def _title(self, item_id: int) -> str:
        if not 1 <= item_id < len(self.titles):
            raise ValueError(f"unknown item id {item_id} (catalog has ids 1..{len(self.titles) - 1})")
        return self.titles[item_id]

    def user_batch(
        self, histories: Sequence[History], timestamps: Sequence[Any] | None = None
    ) -> PromptBatch:
        """The user prompt embeddings (the function serving and training share)."""
        ids = self._token_ids(self.user_prompts(histories, timestamps), USER_OUT)
        shown = [int(i) for h in histories for i in list(h)[-self.prompt.history_len :]]
        return self._batch(ids, shown, USER_OUT, self.heads.user_out)

    def item_batch(self, item_ids: Sequence[int]) -> PromptBatch:
        ids = self._token_ids(self.item_prompts(item_ids), ITEM_OUT)
        return self._batch(ids, [int(i) for i in item_ids], ITEM_OUT, self.heads.item_out)

    def user_hidden(self, histories: Sequence[History], timestamps: Sequence[Any] | None = None) -> Tensor:
        """(B, H) the LLM's last-layer hidden states at [UserOut]: what `pred_user` reads."""
        return self._read(self.user_batch(histories, timestamps), USER_OUT)

    def item_hidden(self, item_ids: Sequence[int]) -> Tensor:
        """(N, H) the LLM's last-layer hidden states at [ItemOut]: what `pred_item` reads."""
        return self._read(self.item_batch(item_ids), ITEM_OUT)

    def user_vectors(self, histories: Sequence[History], timestamps: Sequence[Any] | None = None) -> Tensor:
        """(B, user_dim) user vectors."""
        return self.heads.user_vector(self.user_hidden(histories, timestamps))

    def item_vectors(self, item_ids: Sequence[int]) -> Tensor:
        """(N, user_dim) item vectors."""
        return self.heads.item_vector(self.item_hidden(item_ids))

    def _check_special_tokens(self) -> None:
        """The tokenizer must map the markers to the recorded ids (else the soft rows land elsewhere)."""
        convert = getattr(self.tokenizer, "convert_tokens_to_ids", None)
        if convert is None:
            return
        wrong = {
            t: (self.special.get(t), int(convert(t)))
            for t in MARKER_TOKENS
            if self.special.get(t) != convert(t)
        }
        if wrong:
            raise ValueError(f"special-token ids differ (recorded, tokenizer): {wrong}")

    def _token_ids(self, texts: list[str], out_token: str) -> list[list[int]]:
        ids = tokenize(self.tokenizer, texts)
        out_id = self.special[out_token]
        for row in ids:
            if row[-1] != out_id or row.count(out_id) != 1:
                raise ValueError(f"{out_token} must be the single last token of every prompt")
        return ids

    def _batch(self, ids: list[list[int]], items: list[int], out_token: str, out_vec: Tensor) -> PromptBatch:
        item_ids = torch.tensor(items, dtype=torch.long, device=self.heads.cf_item_emb.device)
        soft = {
            self.special[HISTORY_EMB]: self.heads.history_rows(item_ids),
            self.special[out_token]: out_vec,
        }
        return build_prompt_batch(ids, self.embedding, self.special[PAD_KEY], soft, self.padding_side)

    def _read(self, batch: PromptBatch, out_token: str) -> Tensor:
        hidden = hidden_at_marker(self.llm, batch, self.special[out_token])  # (B, H)
        return hidden.to(self.heads.user_out.dtype)
