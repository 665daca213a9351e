"""The in-process transformers backend (the only app module importing transformers): load the bundle's
LLM, add the special tokens exactly as training did (checked against the manifest), and encode users with
the shared models.llmsrec.LLMSRecEncoder — the same function training and evaluation use."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from app.bundle import ServingBundle
from app.errors import StartupError
from models.llmsrec import LLMSRecEncoder
from models.prompts import PROMPT_TEMPLATE_VERSION
from models.soft_prompt import add_special_tokens

log = logging.getLogger(__name__)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _check(bundle: ServingBundle, special: dict[str, int], hidden: int, location: str) -> None:
    """The loaded LLM must be the one the heads were trained with, and the prompt the same template."""
    llm = bundle.manifest.llm or {}
    problems = []
    if special != dict(llm.get("special_tokens", {})):
        problems.append(
            f"special tokens {special} != manifest llm.special_tokens {llm.get('special_tokens')}"
        )
    if bundle.heads is not None and hidden != bundle.heads.config.llm_hidden:
        problems.append(f"hidden size {hidden} != llmsrec llm_hidden {bundle.heads.config.llm_hidden}")
    if llm.get("prompt_template_version") != PROMPT_TEMPLATE_VERSION:
        problems.append(
            f"manifest prompt_template_version {llm.get('prompt_template_version')!r} != this code's "
            f"{PROMPT_TEMPLATE_VERSION!r} (re-export the bundle)"
        )
    if problems:
        raise StartupError(
            f"LLM at {location} does not match bundle {bundle.version}: " + "; ".join(problems)
        )


class HFBackend:
    name = "hf"

    def __init__(self, encoder: LLMSRecEncoder) -> None:
        self.encoder = encoder
        self._healthy = True

    @classmethod
    def from_bundle(
        cls, bundle: ServingBundle, *, device: str, dtype: str, llm_path: str | None
    ) -> HFBackend:
        if bundle.heads is None or bundle.prompt is None:
            raise StartupError(
                f"bundle {bundle.root} has no llmsrec model; the LLM backend has nothing to serve"
            )
        location = bundle.llm_location(llm_path)
        name = (bundle.manifest.llm or {}).get("dtype", "float32") if dtype == "auto" else dtype
        start = time.perf_counter()
        try:
            tokenizer = AutoTokenizer.from_pretrained(location)
            model: Any = AutoModelForCausalLM.from_pretrained(location, dtype=DTYPES[name])
        except (OSError, ValueError, KeyError) as err:
            raise StartupError(
                f"cannot load the LLM from {location!r} (set LLMREC_LLM_PATH?): {err}"
            ) from err
        special = add_special_tokens(model, tokenizer)
        _check(bundle, special, int(model.config.hidden_size), location)
        model.requires_grad_(False)
        model.to(device).eval()
        titles = [item.title for item in bundle.catalog.items]
        encoder = LLMSRecEncoder(model, tokenizer, bundle.heads, titles, special, bundle.prompt)
        log.info("LLM %s loaded (%s, %s) in %.1f s", location, name, device, time.perf_counter() - start)
        return cls(encoder)

    def encode_users(
        self, histories: Sequence[Sequence[int]], timestamps: Sequence[Sequence[float] | None]
    ) -> np.ndarray:
        try:
            with torch.inference_mode():
                vectors = self.encoder.user_vectors(histories, timestamps)
        except Exception:
            self._healthy = False
            raise
        self._healthy = True
        return vectors.float().cpu().numpy()

    def health(self) -> bool:
        return self._healthy

    def close(self) -> None:
        """Drop the weights with the app; on a GPU, hand the freed memory back."""
        self.encoder.llm = None  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
