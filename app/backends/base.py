"""The LLM backend interface (histories → LLM-SRec user vectors, A-LLMRec candidate scores, genre scores, a
health check) and the
registry that picks an implementation by the `llm_backend` setting, importing it only when chosen."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import numpy as np

from app.errors import BackendError, StartupError

if TYPE_CHECKING:
    from app.bundle import ServingBundle

T = TypeVar("T")
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

    def rank_candidates(
        self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """One (C_b,) float array per history: the A-LLMRec recommendation prompt's summed log-likelihood of
        each candidate's title (higher = likelier), candidates in the order they are shown in the prompt.
        Blocking, like encode_users. BackendError when the backend or the bundle cannot do it."""
        ...

    def explain_genres(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, list[str]]:
        """(B, G) scores over the bundle's genre vocabulary (A-LLMRec genre prompt: mean token
        log-likelihood of each genre name, higher = likelier) and one generated sentence per history.
        Blocking, like encode_users. BackendError when the backend or the bundle cannot do it."""
        ...

    def health(self) -> bool:
        """Cheap liveness of the engine (no forward pass)."""
        ...

    def close(self) -> None: ...


class BackendFactory(Protocol):
    @classmethod
    def from_bundle(
        cls, bundle: ServingBundle, *, device: str, dtype: str, llm_path: str | None, **options: Any
    ) -> LLMBackend: ...


class HealthWatch:
    """A backend's health from its last forward: unhealthy after a failure, healthy after a success.
    BackendError (the bundle or backend cannot do that) and ValueError (a bad input) leave it unchanged."""

    _healthy: bool = True

    def _watch(self, call: Callable[..., T], *args: Any) -> T:
        try:
            result = call(*args)
        except (BackendError, ValueError):
            raise
        except Exception:
            self._healthy = False
            raise
        self._healthy = True
        return result


def create_backend(
    name: str,
    bundle: ServingBundle,
    *,
    device: str,
    dtype: str,
    llm_path: str | None,
    options: Mapping[str, Any] | None = None,
) -> LLMBackend:
    """Import and build the backend registered under `name`; `options` are that backend's own settings
    (e.g. vLLM's GPU memory share), passed as keyword arguments."""
    if name not in BACKENDS:
        raise StartupError(f"llm_backend {name!r} unknown; choose one of {', '.join(BACKENDS)}")
    module_name, class_name = BACKENDS[name].split(":")
    factory: BackendFactory = getattr(importlib.import_module(module_name), class_name)
    return factory.from_bundle(bundle, device=device, dtype=dtype, llm_path=llm_path, **(options or {}))
