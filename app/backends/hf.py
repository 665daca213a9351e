"""The in-process transformers backend (the only app module importing transformers): load the bundle's LLM
(CPU or CUDA, dtype by models.runtime: `auto` = bf16 on a CUDA GPU that has it, else float32), add the special
tokens as training did (checked against the manifest), and encode users with the shared
models.llmsrec.LLMSRecEncoder. models.runtime.LoadedLLM is the handle on the loaded LLM (vLLM's too)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.backends.base import HealthWatch
from app.bundle import ALLMRecModel, GenreModel, ServingBundle
from app.errors import BackendError, StartupError
from models.allmrec_encoder import ALLMRecEncoder
from models.allmrec_genre import GenreEncoder
from models.llmsrec import LLMSRecEncoder
from models.runtime import LoadedLLM, resolve_llm_dtype, torch_dtype
from models.soft_prompt import add_special_tokens

log = logging.getLogger(__name__)


def _check(bundle: ServingBundle, special: dict[str, int], hidden: int, location: str) -> None:
    """The loaded LLM must be the one the heads were trained with (the bundle's templates were checked when it
    was verified: models.manifest_parts.template_problems)."""
    recorded = dict(bundle.llm.special_tokens) if bundle.llm is not None else {}
    problems = []
    if special != recorded:
        problems.append(f"special tokens {special} != manifest llm.special_tokens {recorded}")
    if bundle.heads is not None and hidden != bundle.heads.config.llm_hidden:
        problems.append(f"hidden size {hidden} != llmsrec llm_hidden {bundle.heads.config.llm_hidden}")
    if problems:
        raise StartupError(
            f"LLM at {location} does not match bundle {bundle.version}: " + "; ".join(problems)
        )


def load_bundle_llm(bundle: ServingBundle, *, device: str, dtype: str, llm_path: str | None) -> LoadedLLM:
    """Load the LLM the bundle names (or `llm_path`) in `dtype` (models.runtime.resolve_llm_dtype: 'auto' or a
    name); StartupError if it cannot be loaded or does not match the manifest. Also used by the vLLM backend
    for the prompt embeddings."""
    location = bundle.llm_location(llm_path)
    name = resolve_llm_dtype(dtype, device)
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model: Any = AutoModelForCausalLM.from_pretrained(location, dtype=torch_dtype(name))
    except (OSError, ValueError, KeyError) as err:
        raise StartupError(f"cannot load the LLM from {location!r} (set LLMREC_LLM_PATH?): {err}") from err
    special = add_special_tokens(model, tokenizer)
    _check(bundle, special, int(model.config.hidden_size), location)
    model.requires_grad_(False)
    model.to(device).eval()
    log.info("LLM %s loaded (%s, %s) in %.1f s", location, name, device, time.perf_counter() - start)
    return LoadedLLM(model, tokenizer, special, location=location, dtype=name)


def _allmrec_over(bundle: ServingBundle, part: ALLMRecModel | GenreModel, llm: LoadedLLM) -> ALLMRecEncoder:
    """The A-LLMRec prompt encoder over the bundle's SASRec and catalogue with `part`'s stage 1, stage 2 and
    prompt (the recommendation part or the genre part)."""
    titles = [item.title for item in bundle.catalog.items]
    stages = (bundle.sasrec, part.stage1, part.stage2)
    return ALLMRecEncoder(llm.model, llm.tokenizer, *stages, titles, llm.special_tokens, part.prompt)


def allmrec_encoder(bundle: ServingBundle, llm: LoadedLLM) -> ALLMRecEncoder | None:
    """A-LLMRec's recommendation prompt over the bundle's SASRec, stage 1 and stage 2 (None without)."""
    part = bundle.allmrec
    if part is None:
        return None
    return _allmrec_over(bundle, part, llm)


def genre_encoder(bundle: ServingBundle, llm: LoadedLLM) -> GenreEncoder | None:
    """A-LLMRec's genre prompt over the bundle's SASRec, stage 1 and genre-trained stage 2 (None without)."""
    part = bundle.genre
    if part is None:
        return None
    allmrec = _allmrec_over(bundle, part, llm)
    return GenreEncoder(
        llm.model, llm.tokenizer, part.genres, llm.special_tokens, part.prompt, allmrec=allmrec
    )


Generate = Callable[[GenreEncoder, Sequence[Sequence[int]], int], list[str]]


def hf_generate(genre: GenreEncoder, histories: Sequence[Sequence[int]], max_new_tokens: int) -> list[str]:
    """Explanations by greedy decoding with the in-process transformers model."""
    return genre.explain(histories, max_new_tokens)


@dataclass
class ContinuationScorer:
    """What needs continuation log-likelihoods from the LLM (transformers, in process): A-LLMRec's candidate
    scores (in the bundle's score mode: summed, per token or PMI against the prior prompt) and its genre
    scores. The service writes the genre sentence from the ranked list; a free greedy continuation
    (`generate`: transformers by default, or a `vllm serve` server) runs only when `explanation_tokens` > 0.
    Blocking; errors propagate."""

    genre: GenreEncoder | None = None
    allmrec: ALLMRecEncoder | None = None
    generate: Generate = hf_generate
    explanation_tokens: int = 0  # greedy tokens of a free genre continuation (0 = none)
    score_mode: str = "sum"  # models.allmrec_scoring.SCORE_MODES

    def rank_candidates(
        self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        if self.allmrec is None:
            raise BackendError("the bundle has no A-LLMRec recommendation model")
        with torch.inference_mode():
            return self.allmrec.candidate_scores(histories, candidates, self.score_mode)

    def explain_genres(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, list[str]]:
        if self.genre is None:
            raise BackendError("the bundle has no A-LLMRec genre model")
        with torch.inference_mode():
            scores = self.genre.scores(histories).float().cpu().numpy()
            if self.explanation_tokens <= 0:
                return scores, [""] * len(histories)
            texts = self.generate(self.genre, histories, self.explanation_tokens)
        return scores, texts


def bundle_scorer(bundle: ServingBundle, llm: LoadedLLM) -> ContinuationScorer:
    """The bundle's A-LLMRec candidate and genre scoring on a transformers LLM."""
    mode = bundle.allmrec.scoring.mode if bundle.allmrec is not None else "sum"
    return ContinuationScorer(genre_encoder(bundle, llm), allmrec_encoder(bundle, llm), score_mode=mode)


class HFBackend(HealthWatch):
    name = "hf"

    def __init__(self, encoder: LLMSRecEncoder, scorer: ContinuationScorer | None = None) -> None:
        self.encoder, self.scorer = encoder, scorer or ContinuationScorer()
        self._healthy = True

    @classmethod
    def from_bundle(
        cls, bundle: ServingBundle, *, device: str, dtype: str, llm_path: str | None, **options: Any
    ) -> HFBackend:
        if options:
            raise StartupError(f"llm_backend 'hf' takes no options, got {sorted(options)}")
        if bundle.heads is None or bundle.prompt is None:
            raise StartupError(
                f"bundle {bundle.root} has no llmsrec model; the LLM backend has nothing to serve"
            )
        llm = load_bundle_llm(bundle, device=device, dtype=dtype, llm_path=llm_path)
        titles = [item.title for item in bundle.catalog.items]
        encoder = LLMSRecEncoder(
            llm.model, llm.tokenizer, bundle.heads, titles, llm.special_tokens, bundle.prompt
        )
        return cls(encoder, bundle_scorer(bundle, llm))

    def encode_users(
        self, histories: Sequence[Sequence[int]], timestamps: Sequence[Sequence[float] | None]
    ) -> np.ndarray:
        return self._watch(self._user_vectors, histories, timestamps)

    def _user_vectors(
        self, histories: Sequence[Sequence[int]], timestamps: Sequence[Sequence[float] | None]
    ) -> np.ndarray:
        with torch.inference_mode():
            return self.encoder.user_vectors(histories, timestamps).float().cpu().numpy()

    def rank_candidates(
        self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        return self._watch(self.scorer.rank_candidates, histories, candidates)

    def explain_genres(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, list[str]]:
        return self._watch(self.scorer.explain_genres, histories)

    def health(self) -> bool:
        return self._healthy

    def close(self) -> None:
        """Drop the weights with the app; on a GPU, hand the freed memory back."""
        self.encoder.llm = None  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
