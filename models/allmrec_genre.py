"""A-LLMRec's favourite-genre task: the stage-2 soft tokens (user F_U, history items F_I) in a genre prompt;
every genre of the vocabulary is scored by the frozen LLM's likelihood of its name as the continuation, the
scores are blended with the history's own genre shares (weight chosen on validation), and the sentence is
written from the ranked list, so list and sentence always agree. The greedy continuation (`explain`) stays as
a measured baseline. Without an A-LLMRec encoder it is the titles-only baseline (same wording)."""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from models.allmrec import lm_loss
from models.allmrec_encoder import ALLMRecEncoder
from models.lm_scoring import IGNORE, continuation_logprobs, greedy_generate, target_logits
from models.prompts import (
    ALLMREC_ITEM,
    PAD_KEY,
    ALLMRecPromptConfig,
    allmrec_user_clause,
    truncate_titles,
)
from models.soft_prompt import PromptBatch, build_prompt_batch, pad_ids, tokenize

# Bump when the wording changes: heads trained on one wording do not fit another.
GENRE_TEMPLATE_VERSION = "allmrec-genre-v1"


def genre_lead(config: ALLMRecPromptConfig) -> str:
    return f"The {config.noun} genres this user likes most are:"


def genre_prompt(titles: Sequence[str], config: ALLMRecPromptConfig, soft: bool) -> str:
    """The genre prompt for a (cut) history, oldest first; genre names follow it as the continuation.
    `soft`: the user marker and one item marker per title (A-LLMRec); else the plain-text baseline."""
    mark = ALLMREC_ITEM if soft else ""
    items = ",".join(f'"{t}"{mark}' for t in titles)
    user = allmrec_user_clause(config) if soft else ""
    return f"{user}This user has {config.verb} {items} in the previous. {genre_lead(config)}"


def genre_target(genres: Sequence[str], rng: random.Random | None = None) -> str:
    """Training continuation ' G1, G2.' (order shuffled by `rng`: no genre is privileged by position)."""
    names = list(genres)
    if rng is not None:
        rng.shuffle(names)
    return " " + ", ".join(names) + "."


def tidy_sentence(text: str) -> str:
    """A generated continuation → its first line up to the first full stop, repeated list items dropped
    (greedy decoding of a small LLM tends to loop: 'Drama, Horror, Drama, Horror, ...')."""
    text = text.strip().split("\n")[0].split(".")[0]
    items: list[str] = []
    for part in (p.strip() for p in text.split(",")):
        if part and part not in items:
            items.append(part)
    return ", ".join(items) + "." if items else ""


class GenreEncoder:
    """Histories → genre prompt embeddings → frozen LLM: genre scores (B, G), LM loss, explanations.

    With `allmrec` the prompt carries its soft tokens (gradients reach its stage 2 outside no_grad);
    without, it is plain text over `titles` (`titles[i - 1]` = item i's title). Prompts are left-padded."""

    def __init__(
        self,
        llm: nn.Module,
        tokenizer: Callable[..., Any],
        genres: Sequence[str],
        special_tokens: Mapping[str, int],
        prompt: ALLMRecPromptConfig,
        *,
        allmrec: ALLMRecEncoder | None = None,
        titles: Sequence[str] | None = None,
    ) -> None:
        if not genres:
            raise ValueError("the genre vocabulary is empty")
        if allmrec is None and titles is None:
            raise ValueError("the titles-only genre prompt needs the catalog titles")
        self.llm, self.tokenizer, self.allmrec, self.prompt = llm, tokenizer, allmrec, prompt
        self.embedding: nn.Module = llm.get_input_embeddings()  # type: ignore[operator]
        self.special, self.genres = dict(special_tokens), list(genres)
        if allmrec is not None:
            self.titles = allmrec.titles
        else:
            self.titles = ["", *truncate_titles(titles or [], tokenizer, prompt.max_title_tokens)]
        self.genre_ids = [self.token_ids(" " + g) for g in self.genres]
        self.pad_id = self.special[PAD_KEY]

    def token_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def window(self, history: Sequence[int]) -> list[int]:
        """The most recent `history_len` item ids; ValueError for an empty history or unknown ids."""
        items = [int(i) for i in history][-self.prompt.history_len :]
        if not items:
            raise ValueError("an empty history has no genre prompt")
        bad = [i for i in items if not 1 <= i < len(self.titles)]
        if bad:
            raise ValueError(f"unknown item ids {bad} (catalog has ids 1..{len(self.titles) - 1})")
        return items

    def prompts(self, histories: Sequence[Sequence[int]]) -> list[str]:
        soft = self.allmrec is not None
        return [genre_prompt([self.titles[i] for i in self.window(h)], self.prompt, soft) for h in histories]

    def batch(
        self, histories: Sequence[Sequence[int]], targets: Sequence[Sequence[int]] | None = None
    ) -> tuple[PromptBatch, Tensor | None]:
        """Prompt embeddings (+ `targets` token ids appended, with labels on them only)."""
        texts = self.prompts(histories)
        if self.allmrec is not None:
            windows = [self.window(h) for h in histories]
            return self.allmrec.soft_batch(texts, self.allmrec.cf_users(histories), windows, targets)
        ids = tokenize(self.tokenizer, texts)
        if targets is not None:
            ids = [[*row, *t] for row, t in zip(ids, targets, strict=True)]
        batch = build_prompt_batch(ids, self.embedding, self.pad_id, {}, "left")
        if targets is None:
            return batch, None
        rows = [[IGNORE] * (len(row) - len(t)) + list(t) for row, t in zip(ids, targets, strict=True)]
        return batch, pad_ids(rows, IGNORE, "left", batch.input_ids.device)[0]

    def scores(self, histories: Sequence[Sequence[int]]) -> Tensor:
        """(B, G) mean per-token log-likelihood of every genre name after the prompt (higher = likelier);
        the mean keeps multi-token names (Sci-Fi, Film-Noir) comparable with one-token ones."""
        batch, _ = self.batch(histories)
        scored = continuation_logprobs(self.llm, batch, [self.genre_ids] * len(histories), self.pad_id)
        return torch.stack([total / count for total, count in scored])  # (B, G)

    def loss(self, histories: Sequence[Sequence[int]], targets: Sequence[str]) -> Tensor:
        """Mean LM cross-entropy over the target text's tokens only (the prompt is context)."""
        batch, labels = self.batch(histories, [self.token_ids(t) for t in targets])
        assert labels is not None
        logits, tokens = target_logits(self.llm, batch, labels)
        return lm_loss(logits, tokens)

    def continuations(self, histories: Sequence[Sequence[int]], max_new_tokens: int = 24) -> list[str]:
        """The raw greedy continuation of each genre prompt (the free-text baseline, untidied)."""
        eos = getattr(self.tokenizer, "eos_token_id", None)
        batch, _ = self.batch(histories)
        rows = greedy_generate(
            self.llm, batch, max_new_tokens, [] if eos is None else [int(eos)], self.pad_id
        )
        decode = self.tokenizer.decode  # type: ignore[attr-defined]
        return [decode(row, skip_special_tokens=True) for row in rows]

    def explain(self, histories: Sequence[Sequence[int]], max_new_tokens: int = 24) -> list[str]:
        """One sentence per history: the prompt's last clause and its tidied greedy continuation."""
        return self.sentences(self.continuations(histories, max_new_tokens))

    def prompt_embeds(self, histories: Sequence[Sequence[int]]) -> list[Tensor]:
        """Unpadded (T_i, H) prompt embeddings per history, for an engine that generates from them."""
        return self.batch(histories)[0].per_prompt()

    def sentences(self, continuations: Sequence[str]) -> list[str]:
        """Generated continuations → explanation sentences: the prompt's last clause + the tidied text."""
        lead = genre_lead(self.prompt)
        texts = [tidy_sentence(text) for text in continuations]
        return [f"{lead} {text}" if text else lead for text in texts]


def genre_sentence(ranked: Sequence[str], config: ALLMRecPromptConfig, lead: str | None = None) -> str:
    """The explanation, written from the ranked list: its genres in order, each once, a full sentence.
    'The movie genres this user likes most are: Comedy, Drama and Romance.'"""
    lead = genre_lead(config) if lead is None else lead
    names = list(dict.fromkeys(ranked))  # keeps the order, drops repeats
    if not names:
        return f"{lead} none known yet."
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + f" and {names[-1]}"
    return f"{lead} {listed}."
