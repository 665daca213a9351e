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
from models.allmrec_scoring import PRIOR_MODES, llm_scores, mode_scores
from models.lm_scoring import IGNORE, continuation_logprobs, greedy_generate, target_logits
from models.prompts import (
    ALLMREC_ITEM,
    ALLMREC_USER,
    PAD_KEY,
    ALLMRecPromptConfig,
    allmrec_candidate_clause,
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
        cf_users: Tensor | None,
        item_ids: Sequence[Sequence[int]],
        targets: Sequence[Sequence[int]] | None = None,
    ) -> tuple[PromptBatch, Tensor | None]:
        """Prompt embeddings for any A-LLMRec prompt: each text holds one user marker (gets F_U(cf_users[b]);
        none when cf_users is None) and one item marker per id in item_ids[b] (gets F_I, in order).
        `targets` (token ids) are appended after each prompt; labels (B, T) are then IGNORE everywhere
        except on the target tokens."""
        ids = tokenize(self.tokenizer, texts)
        if targets is not None:
            ids = [[*row, *t] for row, t in zip(ids, targets, strict=True)]
        flat = [int(i) for row in item_ids for i in row]
        soft: dict[int, Tensor] = {}
        if cf_users is not None:
            soft[self.special[ALLMREC_USER]] = self.stage2.user_rows(cf_users)  # (B, H)
        if flat:
            soft[self.special[ALLMREC_ITEM]] = self.item_rows(flat)  # (N, H)
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

    def ranking_losses(
        self,
        histories: Sequence[History],
        candidates: Sequence[Sequence[int]],
        targets: Sequence[int],
        mode: str = "sum",
    ) -> dict[str, Tensor]:
        """One forward, two losses, gradients into stage 2. `lm`: the paper's LM loss, the target title's
        (and EOS's) mean token cross-entropy. `rank` (ours): cross-entropy of a softmax over every candidate's
        score in `mode` (models.allmrec_scoring: `sum` is the paper's summed title log-likelihood), with
        the target as the label. The PMI modes also run the prior prompt, without gradient: a baseline
        per title, so the loss ranks by what the user's tokens add to each title's likelihood."""
        rows = self.candidate_rows(histories, candidates)
        where = [[int(c) for c in cands].index(int(t)) for cands, t in zip(candidates, targets, strict=True)]
        sums = torch.stack([s for s, _ in rows])  # (B, C)
        counts = torch.stack([n for _, n in rows]).to(sums.dtype)  # (B, C)
        prior = None
        if mode in PRIOR_MODES:
            with torch.no_grad():
                prior = torch.stack([s for s, _ in self.prior_rows(candidates)]).to(sums.dtype)
        label = torch.tensor(where, device=sums.device)
        picked = sums.gather(1, label[:, None])[:, 0] / counts.gather(1, label[:, None])[:, 0]
        logits = mode_scores(sums, counts, prior, mode)
        return {"lm": -picked.mean(), "rank": nn.functional.cross_entropy(logits, label)}

    def candidate_rows(
        self, histories: Sequence[History], candidates: Sequence[Sequence[int]]
    ) -> list[tuple[Tensor, Tensor]]:
        """Per prompt: the (C_b,) summed log-likelihood of each candidate's target text given the prompt and
        the (C_b,) token counts; candidates appear in the prompt in the given order (C_b may differ)."""
        batch, _ = self.recommendation_batch(histories, candidates)
        conts = [[self.target_ids(int(c)) for c in cands] for cands in candidates]
        return continuation_logprobs(self.llm, batch, conts, self.special[PAD_KEY])

    def prior_rows(self, candidates: Sequence[Sequence[int]]) -> list[tuple[Tensor, Tensor]]:
        """As candidate_rows, under the prior prompt: the candidate clause alone (no user token, no
        history), so a title's log-likelihood here is its prior among these candidates."""
        texts = [
            allmrec_candidate_clause([self.title(int(c)) for c in cands], self.prompt) for cands in candidates
        ]
        marked = [[int(c) for c in cands] for cands in candidates]
        batch, _ = self.soft_batch(texts, None, marked)
        conts = [[self.target_ids(int(c)) for c in cands] for cands in candidates]
        return continuation_logprobs(self.llm, batch, conts, self.special[PAD_KEY])

    def candidate_scores(
        self, histories: Sequence[History], candidates: Sequence[Sequence[int]], mode: str
    ) -> list[np.ndarray]:
        """Per prompt, the (C_b,) LLM score of each candidate in `mode` (models.allmrec_scoring); the PMI
        modes run the prior prompt too. No gradient."""
        with torch.no_grad():
            rows = self.candidate_rows(histories, candidates)
            priors = self.prior_rows(candidates) if mode in PRIOR_MODES else [None] * len(rows)
        out = []
        for (sums, counts), prior in zip(rows, priors, strict=True):
            prior_sums = None if prior is None else prior[0].cpu().numpy()[None]
            out.append(llm_scores(sums.cpu().numpy()[None], counts.cpu().numpy()[None], prior_sums, mode)[0])
        return out

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
