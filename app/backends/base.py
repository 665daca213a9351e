"""The LLM backend interface (histories → LLM-SRec user vectors, a health check) and the registry that
picks an implementation by the `llm_backend` setting, importing it only when chosen."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from app.errors import StartupError

if TYPE_CHECKING:
    from app.bundle import ServingBundle

# name → "module:class"; the module is imported only when that backend is chosen (no CUDA at import time).
BACKENDS = {"hf": "app.backends.hf:HFBackend", "vllm": "app.backends.vllm:VLLMBackend"}


@runtime_checkable
class LLMBackend(Protocol):
    name: str

    def encode_users(
        self, histories: Sequence[Sequence[int]], timestamps: Sequence[Sequence[float] | None]
    ) -> np.ndarray:
        """(B, user_dim) float32 user vectors, one per history (oldest item first). Blocking: the
        micro-batcher calls it off the event loop, one batch at a time."""
        ...

    def health(self) -> bool:
        """Cheap liveness of the engine (no forward pass)."""
        ...

    def close(self) -> None: ...


class BackendFactory(Protocol):
    @classmethod
    def from_bundle(
        cls, bundle: ServingBundle, *, device: str, dtype: str, llm_path: str | None
    ) -> LLMBackend: ...


def create_backend(
    name: str, bundle: ServingBundle, *, device: str, dtype: str, llm_path: str | None
) -> LLMBackend:
    """Import and build the backend registered under `name`."""
    if name not in BACKENDS:
        raise StartupError(f"llm_backend {name!r} unknown; choose one of {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name].split(":")
    factory: BackendFactory = getattr(importlib.import_module(module_name), class_name)
    return factory.from_bundle(bundle, device=device, dtype=dtype, llm_path=llm_path)
