"""A-LLMRec stage 2 around a frozen LLM: builds the recommendation prompt's embeddings (the one function
training, evaluation and serving share), the LM loss on the target title, candidate log-likelihoods and
greedy generation matched back to a candidate. Takes loaded parts; knows no loader, file or device policy.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from models.allmrec import ALLMRecStage1, ALLMRecStage2, lm_loss
from models.lm_scoring import IGNORE, continuation_logprobs, greedy_generate, target_logits
from models.prompts import (
    ALLMREC_ITEM,
    ALLMREC_USER,
    PAD_KEY,
    ALLMRecPromptConfig,
    allmrec_prompt,
    allmrec_target,
    parse_generated_title,
    truncate_titles,
)
from models.sasrec import SASRec
from models.soft_prompt import PromptBatch, build_prompt_batch, pad_ids, tokenize

History = Sequence[int] | np.ndarray  # item ids, oldest first


def normalise_title(title: str) -> str:
    """Lower case, alphanumerics only: 'Star Wars (1977)' and 'star wars 1977' match."""
    return re.sub(r"[^0-9a-z]+", "", title.lower())


def match_candidate(generated: str, candidate_titles: Sequence[str]) -> int | None:
    """Index of the candidate whose title the generated text names: exact, then normalised; else None."""
    for i, title in enumerate(candidate_titles):
        if generated == title:
            return i
    key = normalise_title(generated)
    if key:
        for i, title in enumerate(candidate_titles):
            if normalise_title(title) == key:
                return i
    return None


def prompt_order(candidates: np.ndarray, seed: int) -> np.ndarray:
    """Column indices in the order the candidates appear in the prompt: a seeded shuffle of the candidate
    *set*, so the positive (column 0 in the shared protocol) sits anywhere, the same every run, and an item's
    score does not depend on the column it was given in."""
    by_id = np.argsort(candidates, kind="stable")
    key = [seed, *(int(c) for c in candidates[by_id])]
    return by_id[np.random.default_rng(key).permutation(len(candidates))]


class ALLMRecEncoder:
    """SASRec user vector + stage-1 latents → stage-2 soft tokens spliced into the prompt → frozen LLM.

    `titles[i - 1]` is item i's title. Gradients reach stage 2 when called outside `no_grad`; SASRec and
    stage 1 stay frozen (the caller sets requires_grad). Prompts are left-padded."""

    def __init__(
        self,
        llm: nn.Module,
        tokenizer: Callable[..., Any],
        sasrec: SASRec,
        stage1: ALLMRecStage1,
        stage2: ALLMRecStage2,
        titles: Sequence[str],
        special_tokens: Mapping[str, int],
        prompt: ALLMRecPromptConfig,
    ) -> None:
        self.llm, self.tokenizer, self.sasrec = llm, tokenizer, sasrec
        self.stage1, self.stage2, self.prompt = stage1, stage2, prompt
        self.embedding: nn.Module = llm.get_input_embeddings()  # type: ignore[operator]
        self.special = dict(special_tokens)
        self.titles = ["", *truncate_titles(titles, tokenizer, prompt.max_title_tokens)]
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_id = int(self.special[PAD_KEY] if eos is None else eos)
        self._target_ids: dict[int, list[int]] = {}

    @property
    def device(self) -> torch.device:
        return next(self.stage2.parameters()).device

    def title(self, item_id: int) -> str:
        if not 1 <= item_id < len(self.titles):
            raise ValueError(f"unknown item id {item_id} (catalog has ids 1..{len(self.titles) - 1})")
        return self.titles[item_id]

    def cf_users(self, histories: Sequence[History]) -> Tensor:
        """(B, d_cf) SASRec user vectors of the histories (last max_len items), no gradient."""
        max_len = self.sasrec.config.max_len
        seqs = torch.zeros((len(histories), max_len), dtype=torch.long)
        for b, history in enumerate(histories):
            tail = torch.as_tensor(np.asarray(history, dtype=np.int64)[-max_len:])
            seqs[b, max_len - len(tail) :] = tail  # right-aligned, 0 = padding
        with torch.no_grad():
            return self.sasrec.user_vector(seqs.to(self.device)).float()

    def item_rows(self, item_ids: Sequence[int]) -> Tensor:
        """F_I(stage-1 latent) (N, H); cold items take the text encoder's latent."""
        ids = torch.tensor([int(i) for i in item_ids], dtype=torch.long, device=self.device)
        return self.stage2.item_rows(self.stage1.item_latents(ids))

    def target_ids(self, item_id: int) -> list[int]:
        """Token ids the LLM should produce for the item: ' "Title"' then EOS (memoised)."""
        if item_id not in self._target_ids:
            text = allmrec_target(self.title(item_id))
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
            self._target_ids[item_id] = [*ids, self.eos_id]
        return self._target_ids[item_id]

    def soft_batch(
        self,
        texts: Sequence[str],
        cf_users: Tensor,
        item_ids: Sequence[Sequence[int]],
        targets: Sequence[Sequence[int]] | None = None,
    ) -> tuple[PromptBatch, Tensor | None]:
        """Prompt embeddings for any A-LLMRec prompt: each text holds one user marker (gets F_U(cf_users[b]))
        and one item marker per id in item_ids[b] (gets F_I, in order). `targets` (token ids) are appended
        after each prompt; labels (B, T) are then IGNORE everywhere except on the target tokens."""
        ids = tokenize(self.tokenizer, texts)
        if targets is not None:
            ids = [[*row, *t] for row, t in zip(ids, targets, strict=True)]
        users = self.stage2.user_rows(cf_users)  # (B, H)
        flat = [int(i) for row in item_ids for i in row]
        items = self.item_rows(flat) if flat else users[:0]  # (N, H)
        soft = {self.special[ALLMREC_USER]: users, self.special[ALLMREC_ITEM]: items}
        batch = build_prompt_batch(ids, self.embedding, self.special[PAD_KEY], soft, "left")
        if targets is None:
            return batch, None
        label_rows = [[IGNORE] * (len(row) - len(t)) + list(t) for row, t in zip(ids, targets, strict=True)]
        labels, _ = pad_ids(label_rows, IGNORE, "left", batch.input_ids.device)
        return batch, labels

    def recommendation_prompts(
        self, histories: Sequence[History], candidates: Sequence[Sequence[int]]
    ) -> tuple[list[str], list[list[int]]]:
        """Prompt texts and the item id behind each item marker (history oldest first, then candidates)."""
        texts, marked = [], []
        for history, cands in zip(histories, candidates, strict=True):
            shown = [int(i) for i in list(history)[-self.prompt.history_len :]]
            if not shown:
                raise ValueError("A-LLMRec needs a history of at least one item")
            cands = [int(c) for c in cands]
            texts.append(
                allmrec_prompt([self.title(i) for i in shown], [self.title(c) for c in cands], self.prompt)
            )
            marked.append(shown + cands)
        return texts, marked

    def recommendation_batch(
        self,
        histories: Sequence[History],
        candidates: Sequence[Sequence[int]],
        targets: Sequence[int] | None = None,
    ) -> tuple[PromptBatch, Tensor | None]:
        """The stage-2 recommendation prompt embeddings (+ labels on the target titles when given)."""
        texts, marked = self.recommendation_prompts(histories, candidates)
        target_ids = None if targets is None else [self.target_ids(int(t)) for t in targets]
        return self.soft_batch(texts, self.cf_users(histories), marked, target_ids)

    def loss(
        self, histories: Sequence[History], candidates: Sequence[Sequence[int]], targets: Sequence[int]
    ) -> Tensor:
        """LM cross-entropy on the target titles (and EOS) only."""
        batch, labels = self.recommendation_batch(histories, candidates, targets)
        assert labels is not None
        logits, tokens = target_logits(self.llm, batch, labels)
        return lm_loss(logits, tokens)

    def candidate_rows(
        self, histories: Sequence[History], candidates: Sequence[Sequence[int]]
    ) -> list[tuple[Tensor, Tensor]]:
        """Per prompt: the (C_b,) summed log-likelihood of each candidate's target text given the prompt and
        the (C_b,) token counts; candidates appear in the prompt in the given order (C_b may differ)."""
        batch, _ = self.recommendation_batch(histories, candidates)
        conts = [[self.target_ids(int(c)) for c in cands] for cands in candidates]
        return continuation_logprobs(self.llm, batch, conts, self.special[PAD_KEY])

    def candidate_logprobs(
        self, histories: Sequence[History], candidates: Sequence[Sequence[int]]
    ) -> tuple[Tensor, Tensor]:
        """candidate_rows stacked: (B, C) summed log-likelihoods and (B, C) token counts (equal C)."""
        scored = self.candidate_rows(histories, candidates)
        return torch.stack([s for s, _ in scored]), torch.stack([n for _, n in scored])

    def generate(
        self,
        histories: Sequence[History],
        candidates: Sequence[Sequence[int]],
        max_new_tokens: int | None = None,
    ) -> list[str]:
        """Greedy generation after the prompt; the title inside the generated quotes."""
        batch, _ = self.recommendation_batch(histories, candidates)
        limit = max_new_tokens or self.prompt.max_title_tokens + 4
        decode = self.tokenizer.decode  # type: ignore[attr-defined]
        rows = greedy_generate(
            self.llm, batch, limit, [self.eos_id], self.special[PAD_KEY], lambda r: decode(r).count('"') >= 2
        )
        return [parse_generated_title(decode(r, skip_special_tokens=True)) for r in rows]
