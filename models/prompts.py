"""LLM-SRec prompt text: user and item prompts, title truncation, special-token names.

Pure strings and token ids; knows nothing about embeddings or models. Training and serving both use it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# Bump when the wording changes: vectors from different template versions are not comparable.
PROMPT_TEMPLATE_VERSION = "llmsrec-v1"  # the paper's template
SHORT_TEMPLATE_VERSION = "llmsrec-short-v1"  # ours: no "Item No.k, Time: date," (~half the tokens per item)
TEMPLATE_VERSIONS = {"paper": PROMPT_TEMPLATE_VERSION, "short": SHORT_TEMPLATE_VERSION}

HISTORY_EMB = "[HistoryEmb]"
USER_OUT = "[UserOut]"
ITEM_OUT = "[ItemOut]"
PAD_TOKEN = "[PAD]"
# Order matters: added in this order every time, so the ids are the same on every load.
MARKER_TOKENS = (HISTORY_EMB, USER_OUT, ITEM_OUT)
PAD_KEY = "pad"  # key of the pad id in the special-token record {token: id}


@dataclass(frozen=True)
class PromptConfig:
    """What the prompt says: domain wording and size bounds."""

    verb: str = "purchased"
    noun: str = "item"
    history_len: int = 10
    max_title_tokens: int = 24
    version: str = PROMPT_TEMPLATE_VERSION

    def __post_init__(self) -> None:
        if self.version not in TEMPLATE_VERSIONS.values():
            known = ", ".join(sorted(TEMPLATE_VERSIONS.values()))
            raise ValueError(f"unknown LLM-SRec prompt template version {self.version!r} (known: {known})")

    @property
    def shows_dates(self) -> bool:
        """Only the paper's template prints each item's date."""
        return self.version == PROMPT_TEMPLATE_VERSION


def template_version(template: str) -> str:
    """'paper' | 'short' → the template version recorded in checkpoints and bundles."""
    if template not in TEMPLATE_VERSIONS:
        raise ValueError(f"unknown prompt template {template!r} (choose {' or '.join(TEMPLATE_VERSIONS)})")
    return TEMPLATE_VERSIONS[template]


def format_date(timestamp: float) -> str:
    """Unix seconds → 'YYYY-MM-DD' (UTC)."""
    return dt.datetime.fromtimestamp(float(timestamp), tz=dt.UTC).strftime("%Y-%m-%d")


def truncate_titles(titles: Sequence[str], tokenizer: Any, max_tokens: int) -> list[str]:
    """Cut every title to at most `max_tokens` tokens (decoded back to text).

    Double quotes become single quotes and marker strings are dropped, so a title cannot break the prompt.
    """
    clean = []
    for title in titles:
        for marker in (*MARKER_TOKENS, PAD_TOKEN):
            title = title.replace(marker, "")
        clean.append(title.replace('"', "'").strip())
    ids = tokenizer(clean, add_special_tokens=False)["input_ids"]
    return [
        text if len(tok) <= max_tokens else tokenizer.decode(tok[:max_tokens]).strip()
        for text, tok in zip(clean, ids, strict=True)
    ]


def user_prompt(titles: Sequence[str], dates: Sequence[str] | None, config: PromptConfig) -> str:
    """The user prompt for the given (already cut) history, oldest first; ends with [UserOut].

    [UserOut] is the last token so a LAST-pooling runner (vLLM) reads the same hidden state. The short
    template lists the quoted titles only (their order is the sequence) and ignores `dates`.
    """
    if dates is not None and len(dates) != len(titles):
        raise ValueError(f"{len(dates)} dates for {len(titles)} titles")
    nouns = config.noun + "s"
    if not config.shows_dates:
        listed = ", ".join(f'"{title}"{HISTORY_EMB}' for title in titles)
        return f"This user has {config.verb} these {nouns}, oldest first: {listed}. User token:{USER_OUT}"
    parts = []
    for n, title in enumerate(titles):
        time = f"Time: {dates[n]}, " if dates is not None else ""
        parts.append(f'Item No.{n + 1}, {time}"{title}"{HISTORY_EMB}')
    return (
        f"This user has {config.verb} a series of {nouns} in the following order: "
        + ",".join(parts)
        + f". Based on this sequence of {nouns}, generate user representation token:{USER_OUT}"
    )


def item_prompt(title: str, config: PromptConfig) -> str:
    """The item prompt: title and its CF embedding; ends with [ItemOut]."""
    noun = config.noun
    return (
        f'The {noun} title and {noun} embedding are as follows: "{title}"{HISTORY_EMB}, '
        f"then generate {noun} representation token:{ITEM_OUT}"
    )


def cut_history(
    items: Sequence[int] | np.ndarray, timestamps: Sequence[float] | np.ndarray | None, history_len: int
) -> tuple[list[int], list[str] | None]:
    """The last `history_len` items and their dates (None when the data has no timestamps)."""
    kept = [int(i) for i in items][-history_len:] if history_len > 0 else []
    if timestamps is None:
        return kept, None
    if len(timestamps) != len(items):
        raise ValueError(f"{len(timestamps)} timestamps for {len(items)} items")
    return kept, [format_date(t) for t in list(timestamps)[len(items) - len(kept) :]]


# --- A-LLMRec (stage 2) -------------------------------------------------------------------------------
# A-LLMRec reuses the LLM-SRec markers as placeholders: a marker's embedding is always replaced by a soft
# row, so its name never reaches the LLM, and one token set keeps checkpoints and bundles compatible.
ALLMREC_TEMPLATE_VERSION = "allmrec-v1"  # the paper's: the user token is the prompt's very first token
ALLMREC_LEAD_TEMPLATE_VERSION = "allmrec-v2"  # ours: real tokens before the user token
ALLMREC_TEMPLATE_VERSIONS = {"paper": ALLMREC_TEMPLATE_VERSION, "lead": ALLMREC_LEAD_TEMPLATE_VERSION}
ALLMREC_USER = USER_OUT  # the user soft token F_U (the paper's [UserRep])
ALLMREC_ITEM = (
    HISTORY_EMB  # every item soft token F_I: history ([HistoryEmb]) and candidates ([CandidateEmb])
)
BASE_VERBS = {"watched": "watch", "purchased": "buy", "played": "play", "rated": "rate", "read": "read"}


@dataclass(frozen=True)
class ALLMRecPromptConfig:
    """What the A-LLMRec recommendation prompt says: domain wording and size bounds."""

    verb: str = "watched"
    noun: str = "movie"
    history_len: int = 10
    max_title_tokens: int = 24
    version: str = ALLMREC_TEMPLATE_VERSION

    def __post_init__(self) -> None:
        if self.version not in ALLMREC_TEMPLATE_VERSIONS.values():
            known = ", ".join(sorted(ALLMREC_TEMPLATE_VERSIONS.values()))
            raise ValueError(f"unknown A-LLMRec prompt template version {self.version!r} (known: {known})")


def allmrec_template_version(template: str) -> str:
    """'paper' | 'lead' → the A-LLMRec template version recorded in checkpoints and bundles."""
    if template not in ALLMREC_TEMPLATE_VERSIONS:
        choices = " or ".join(ALLMREC_TEMPLATE_VERSIONS)
        raise ValueError(f"unknown A-LLMRec prompt template {template!r} (choose {choices})")
    return ALLMREC_TEMPLATE_VERSIONS[template]


def allmrec_user_clause(config: ALLMRecPromptConfig) -> str:
    """The sentence that carries the user token. The paper's puts it first, where Llama-style models park
    attention (an attention sink); 'lead' puts real tokens before it."""
    if config.version == ALLMREC_TEMPLATE_VERSION:
        return f"{ALLMREC_USER} is a user representation. "
    return f"Here is a user representation: {ALLMREC_USER}. "


def base_verb(verb: str) -> str:
    """'watched' → 'watch' (for "... for this user to watch next")."""
    return BASE_VERBS.get(verb, verb.removesuffix("ed"))


def allmrec_prompt(
    history_titles: Sequence[str], candidate_titles: Sequence[str], config: ALLMRecPromptConfig
) -> str:
    """The paper's prompt: user token, history titles each followed by its item token, candidate titles
    each followed by its item token. Marker order = user, history (oldest first), candidates (as given).
    Ends without a trailing space: the target starts with one (see `allmrec_target`)."""
    history = ",".join(f'"{t}"{ALLMREC_ITEM}' for t in history_titles)
    return (
        f"{allmrec_user_clause(config)}This user has {config.verb} {history} in the previous. "
        + allmrec_candidate_clause(candidate_titles, config)
    )


def allmrec_candidate_clause(candidate_titles: Sequence[str], config: ALLMRecPromptConfig) -> str:
    """The prompt's last sentences: the candidate titles, each followed by its item token. On its own it is
    the *prior* prompt: what the LLM expects of these candidates knowing nothing of the user, the baseline
    of the pointwise-mutual-information score."""
    candidates = ",".join(f'"{t}"{ALLMREC_ITEM}' for t in candidate_titles)
    noun = config.noun
    return (
        f"Recommend one next {noun} for this user to {base_verb(config.verb)} next from the following "
        f"{noun} title set, {candidates}. The recommendation is"
    )


def allmrec_target(title: str) -> str:
    """The text the LLM learns to produce after the prompt (the tokenizer's EOS follows it)."""
    return f' "{title}"'


def parse_generated_title(text: str) -> str:
    """Generated continuation → the text inside its first pair of double quotes (an unclosed quote runs
    to the end); the stripped text when it has no quote."""
    start = text.find('"')
    if start < 0:
        return text.strip()
    rest = text[start + 1 :]
    end = rest.find('"')
    return (rest if end < 0 else rest[:end]).strip()
