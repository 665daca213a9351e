"""The vLLM backend (the only module importing vllm, and only when chosen): user vectors from an in-process
pooling engine fed the prompt embeddings the HF backend builds, [UserOut] last; every tensor is validated
(app.backends.prompt_embeds) before vLLM sees it. Generation over HTTP lives in app.backends.vllm_client."""

from __future__ import annotations

import dataclasses
import gc
import importlib.metadata
import inspect
import logging
import re
from collections.abc import Collection, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from app.backends.base import resolve_llm_dtype
from app.backends.hf import DTYPES, load_bundle_llm
from app.backends.prompt_embeds import PromptEmbedsError, check_last_marker, validate_prompt_embeds
from app.bundle import ServingBundle
from app.errors import BackendError, StartupError
from models.llmsrec import LLMSRecEncoder
from models.prompts import USER_OUT

log = logging.getLogger(__name__)

# [first, below): 0.17 is the first release whose V1 engine pools `prompt_embeds` requests (vllm#34904,
# Feb 2026; earlier ones assert on prompt_token_ids) and loads client tensors with sparse-tensor checks;
# 0.23 is the newest whose PoolerConfig / LLM.embed API this module was written against.
SUPPORTED_VLLM = ("0.17.0", "0.24.0")


def _release(version: str) -> tuple[int, int, int] | None:
    match = re.match(r"^(\d+)\.(\d+)(?:\.(\d+))?", version.strip())
    return None if match is None else (int(match[1]), int(match[2]), int(match[3] or 0))


def check_vllm_version(version: str) -> None:
    """StartupError unless `version` is in SUPPORTED_VLLM (dev builds count by their release number)."""
    first, below = SUPPORTED_VLLM
    found = _release(version)
    if found is None or not (_release(first) or ()) <= found < (_release(below) or ()):
        raise StartupError(
            f"vLLM {version} is not supported: the vllm backend needs vllm>={first},<{below} (pooling "
            f"over prompt_embeds); pip install 'vllm>={first},<{below}' or set LLMREC_LLM_BACKEND=hf"
        )


def installed_vllm_version() -> str:
    try:
        return importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError as err:
        raise StartupError(
            "llm_backend='vllm' but vllm is not installed (pip install 'llmrec[gpu]' on a CUDA machine); "
            "set LLMREC_LLM_BACKEND=hf to serve with transformers"
        ) from err


def _field_names(cls: Any) -> set[str]:
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls)}
    return set(getattr(cls, "model_fields", {})) or set(inspect.signature(cls).parameters)


def no_normalize_kwargs(field_names: Collection[str]) -> dict[str, bool]:
    """Switch the embed pooler's normalisation off: `use_activation` in newer vLLM, `normalize` in older."""
    kwargs = {name: False for name in ("use_activation", "normalize") if name in field_names}
    if not kwargs:
        raise StartupError("this vLLM's PoolerConfig has neither use_activation nor normalize")
    return kwargs


class PoolingEngine:
    """An in-process vLLM engine (runner="pooling", LAST pooling, normalisation off, prompt_embeds on):
    (T_i, H) prompt embeddings → (B, H) float32 last-layer hidden states at each prompt's last position."""

    def __init__(self, llm: Any, hidden: int, dtype: torch.dtype, max_len: int) -> None:
        self.llm, self.hidden, self.dtype, self.max_len = llm, hidden, dtype, max_len

    @classmethod
    def start(
        cls,
        location: str,
        *,
        dtype: str,
        hidden: int,
        gpu_memory_utilization: float,
        max_model_len: int | None,
    ) -> PoolingEngine:
        import vllm  # here only: importing the app must never touch CUDA
        from vllm.config import PoolerConfig

        pooler = PoolerConfig(pooling_type="LAST", **no_normalize_kwargs(_field_names(PoolerConfig)))
        try:
            llm = vllm.LLM(
                model=location,
                runner="pooling",
                convert="embed",
                enable_prompt_embeds=True,
                pooler_config=pooler,
                dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                seed=0,
            )
        except (ValueError, RuntimeError, OSError) as err:
            raise StartupError(f"vLLM could not start a pooling engine for {location!r}: {err}") from err
        max_len = int(llm.llm_engine.model_config.max_model_len)
        log.info(
            "vLLM %s pooling engine: %s (%s, max_model_len %d)", vllm.__version__, location, dtype, max_len
        )
        return cls(llm, hidden, DTYPES[dtype], max_len)

    def last_hidden(self, embeds: Sequence[Tensor]) -> Tensor:
        rows = validate_prompt_embeds(embeds, hidden=self.hidden, dtype=self.dtype, max_len=self.max_len)
        outputs = self.llm.embed([{"prompt_embeds": row} for row in rows], use_tqdm=False)
        return torch.stack([torch.as_tensor(out.outputs.embedding, dtype=torch.float32) for out in outputs])

    def close(self) -> None:
        self.llm = None
        gc.collect()


class EmbeddingOnly(nn.Module):
    """The LLM's input embedding alone: what LLMSRecEncoder needs to build prompt embeddings."""

    def __init__(self, embedding: nn.Module) -> None:
        super().__init__()
        self.embedding = embedding

    def get_input_embeddings(self) -> nn.Module:
        return self.embedding


def prompt_encoder(
    bundle: ServingBundle, *, device: str, dtype: str, llm_path: str | None
) -> tuple[LLMSRecEncoder, int]:
    """The shared LLM-SRec encoder over the LLM's input embedding alone (on `device`), and the hidden size:
    the same prompt embeddings as the HF backend, while vLLM owns the transformer layers."""
    if bundle.heads is None or bundle.prompt is None:
        raise StartupError(f"bundle {bundle.root} has no llmsrec model; the LLM backend has nothing to serve")
    llm = load_bundle_llm(bundle, device="cpu", dtype=dtype, llm_path=llm_path)
    embedding = EmbeddingOnly(llm.model.get_input_embeddings()).to(device)
    titles = [item.title for item in bundle.catalog.items]
    encoder = LLMSRecEncoder(embedding, llm.tokenizer, bundle.heads, titles, llm.special, bundle.prompt)
    hidden = int(llm.model.config.hidden_size)
    del llm  # the CPU copy of the transformer layers
    gc.collect()
    return encoder, hidden


class VLLMBackend:
    """LLMREC_LLM_BACKEND=vllm on a CUDA device (vLLM uses the first visible GPU; choose it with
    CUDA_VISIBLE_DEVICES). LLMREC_VLLM_GPU_MEMORY_UTILIZATION bounds vLLM's share of GPU memory (the rest
    is left for FAISS and ranking); LLMREC_VLLM_MAX_MODEL_LEN caps the context (None = the model's)."""

    name = "vllm"

    def __init__(self, encoder: LLMSRecEncoder, engine: PoolingEngine, user_out_id: int) -> None:
        self.encoder, self.engine, self.user_out_id = encoder, engine, user_out_id
        self._healthy = True

    @classmethod
    def from_bundle(
        cls,
        bundle: ServingBundle,
        *,
        device: str,
        dtype: str,
        llm_path: str | None,
        gpu_memory_utilization: float = 0.5,
        max_model_len: int | None = None,
    ) -> VLLMBackend:
        check_vllm_version(installed_vllm_version())
        if device not in ("cuda", "cuda:0"):
            raise StartupError(
                f"llm_backend='vllm' needs device cuda (got {device!r}); select the GPU with "
                "CUDA_VISIBLE_DEVICES, or use LLMREC_LLM_BACKEND=hf on CPU"
            )
        manifest_dtype = str((bundle.manifest.llm or {}).get("dtype", "float32"))
        cuda_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        name = resolve_llm_dtype(dtype, manifest_dtype, device, cuda_bf16)
        encoder, hidden = prompt_encoder(bundle, device=device, dtype=name, llm_path=llm_path)
        engine = PoolingEngine.start(
            bundle.llm_location(llm_path),
            dtype=name,
            hidden=hidden,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
        )
        backend = cls(encoder, engine, encoder.special[USER_OUT])
        try:
            backend.check_not_normalised()
        except StartupError:
            backend.close()
            raise
        return backend

    def user_hidden(
        self, histories: Sequence[Sequence[int]], timestamps: Sequence[Sequence[float] | None]
    ) -> Tensor:
        """(B, H) hidden states at [UserOut], the same prompt embeddings as the HF backend."""
        batch = self.encoder.user_batch(histories, list(timestamps))
        check_last_marker(batch, self.user_out_id)
        return self.engine.last_hidden(batch.per_prompt())

    def encode_users(
        self, histories: Sequence[Sequence[int]], timestamps: Sequence[Sequence[float] | None]
    ) -> np.ndarray:
        heads = self.encoder.heads
        try:
            with torch.inference_mode():
                hidden = self.user_hidden(histories, timestamps)
                vectors = heads.user_vector(hidden.to(heads.user_out.device, heads.user_out.dtype))
        except PromptEmbedsError:
            raise  # a bad request, not a sick engine
        except Exception:
            self._healthy = False
            raise
        self._healthy = True
        return vectors.float().cpu().numpy()

    def rank_candidates(
        self, histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[np.ndarray]:
        """Not supported: candidate scoring needs continuation log-likelihoods from prompt embeddings,
        which the pooling engine cannot give; /v1/recommend with model=allmrec then answers with SASRec,
        degraded."""
        raise BackendError(
            "the vllm backend does not support A-LLMRec ranking (pooling engine only); "
            "use LLMREC_LLM_BACKEND=hf for model=allmrec"
        )

    def explain_genres(self, histories: Sequence[Sequence[int]]) -> tuple[np.ndarray, list[str]]:
        """Not supported: genre scoring needs continuation log-likelihoods and generation from prompt
        embeddings, which the pooling engine cannot give; /v1/explain/genre then answers degraded."""
        raise BackendError(
            "the vllm backend does not support genre explanations (pooling engine only); "
            "use LLMREC_LLM_BACKEND=hf for /v1/explain/genre"
        )

    def check_not_normalised(self) -> None:
        """A normalising pooler would hand back unit vectors the heads were never trained on."""
        with torch.inference_mode():
            norm = float(self.user_hidden([[1]], [None]).norm(dim=-1)[0])
        if abs(norm - 1.0) < 1e-3:
            raise StartupError("the vLLM pooler L2-normalises its output; LAST pooling must be raw")

    def health(self) -> bool:
        return self._healthy and self.engine.llm is not None

    def close(self) -> None:
        self.engine.close()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
