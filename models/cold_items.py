"""Text-side retrieval of cold items (added after training: no CF row, no interactions): each candidate's
sentence embedding against the mean sentence embedding of the history's items, both rows of A-LLMRec stage
1's text table. Tensors in, tensors out; which items are cold and allowed is the caller's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def history_text_query(text_emb: Tensor, history: Tensor) -> Tensor:
    """(n + 1, d_text) table, (T,) item ids → (d_text,) unit mean of the history's unit text rows (zero for
    an empty history)."""
    if history.numel() == 0:
        return torch.zeros(text_emb.shape[1], dtype=torch.float32, device=text_emb.device)
    rows = F.normalize(text_emb[history].float(), dim=-1)  # (T, d_text)
    return F.normalize(rows.mean(0), dim=-1)  # (d_text,)


def text_scores(text_emb: Tensor, history: Tensor, candidates: Tensor) -> Tensor:
    """(C,) cosine between each candidate's text row and the history's mean text (history_text_query)."""
    query = history_text_query(text_emb, history)  # (d_text,)
    return F.normalize(text_emb[candidates].float(), dim=-1) @ query  # (C, d_text) @ (d_text,) → (C,)
