"""Placeholder for the vLLM backend (prompt embeddings into a pooling runner, DESIGN §4); not built yet,
so choosing it stops the service at startup with a clear message instead of failing per request."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.errors import StartupError

if TYPE_CHECKING:
    from app.backends.base import LLMBackend
    from app.bundle import ServingBundle


class VLLMBackend:
    name = "vllm"

    @classmethod
    def from_bundle(
        cls, bundle: ServingBundle, *, device: str, dtype: str, llm_path: str | None
    ) -> LLMBackend:
        raise StartupError("llm_backend='vllm' is not implemented yet; set LLMREC_LLM_BACKEND=hf")
