"""The service's one configuration object, read from LLMREC_* environment variables (or given directly).
Every other object receives plain values from it; nothing here opens files or connections."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The name the `vllm serve` generate server serves the LLM under (its --served-model-name); docker-compose.yml
# and deploy/k8s/vllm.yaml start it with this name (tests/deploy checks they agree).
VLLM_SERVED_MODEL_NAME = "llmrec-llm"


class Settings(BaseSettings):
    """Service settings; env var = LLMREC_ + the field name in capitals (e.g. LLMREC_REDIS_URL)."""

    model_config = SettingsConfigDict(env_prefix="LLMREC_", extra="forbid", frozen=True)

    bundle: Path = Field(description="Bundle directory written by `llmrec export bundle` (manifest.json).")
    redis_url: str | None = Field(
        default=None,
        description="redis:// URL for user vectors and histories; None → in-process LRU (one replica only).",
    )
    redis_cluster: bool = Field(
        default=False,
        description="redis_url names a node of a Redis Cluster (keys hash-tagged by user; see app.cache).",
    )
    redis_prefix: str = Field(
        default="llmrec",
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="Prefix of every Redis key, so several deployments (or test runs) share one Redis.",
    )
    redis_timeout_s: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="Connect and socket timeout of each Redis call; keeps Redis off the p99.",
    )
    redis_retry_after_s: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="After a Redis error, skip Redis for this long (a simple circuit breaker).",
    )
    redis_max_connections: int = Field(
        default=64, ge=1, le=10_000, description="Size of the Redis connection pool."
    )
    cache_ttl_s: int = Field(default=86_400, ge=1, le=30 * 86_400, description="TTL of a cached user vector.")
    cache_max_entries: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        description="Capacity of the in-process LRU (used when redis_url is None).",
    )
    l1_cache_max_entries: int = Field(
        default=20_000,
        ge=0,
        le=10_000_000,
        description="With Redis: vectors (user vectors, candidate scores, genre answers) each replica keeps "
        "in an in-process LRU in front of Redis, so hot keys skip the network and a Redis outage keeps what "
        "the replica has seen; 0 = none. An entry is 4 bytes per float (a genre answer ~4 KB).",
    )
    l1_cache_ttl_s: float = Field(
        default=3_600,
        gt=0,
        le=30 * 86_400,
        description="TTL of an in-process (L1) cache entry. Keys carry the bundle version and the prompt, so "
        "an entry is never stale; the TTL only bounds how long an unused one survives a Redis outage.",
    )
    history_ttl_s: int = Field(
        default=180 * 86_400,
        ge=0,
        le=3650 * 86_400,
        description="TTL of a stored user history; 0 = never expires.",
    )
    llm_backend: Literal["hf", "vllm"] = Field(
        default="hf",
        description="LLM engine: 'hf' = transformers in process (default), 'vllm' = in-process vLLM pooling "
        "engine (CUDA only, vllm installed; see app.backends.vllm for the supported versions).",
    )
    vllm_gpu_memory_utilization: float = Field(
        default=0.4,
        gt=0,
        le=0.95,
        description="Share of the GPU's total memory the in-process vLLM engine reserves; vLLM refuses to "
        "start when less is free. On a GPU shared with the `vllm serve` generate server (compose: 0.45), "
        "the two shares plus the transformers copy, FAISS and CUDA contexts must fit (see deploy/README.md).",
    )
    vllm_max_model_len: int | None = Field(
        default=None,
        ge=16,
        le=1_048_576,
        description="Context length of the vLLM engine; None = the model's (prompts are ~300-600 tokens).",
    )
    vllm_hf_scoring: bool = Field(
        default=True,
        description="llm_backend=vllm: keep a transformers copy of the LLM on the GPU for what the pooling "
        "engine cannot do (A-LLMRec candidate and genre scores); off = those answer degraded. Only when the "
        "bundle has an A-LLMRec part; costs one more copy of the LLM weights.",
    )
    vllm_generate_url: str | None = Field(
        default=None,
        description="llm_backend=vllm: base URL of a `vllm serve --enable-prompt-embeds` server that writes "
        "the /v1/explain/genre sentence (e.g. http://vllm:8000); None = the transformers copy writes it.",
    )
    vllm_generate_model: str = Field(
        default=VLLM_SERVED_MODEL_NAME,
        min_length=1,
        description="Model name sent to that server: its --served-model-name (vLLM answers 404 to any "
        "other); the compose `vllm` service is started with this same variable.",
    )
    llm_path: str | None = Field(
        default=None, description="Override of the manifest's LLM location (local directory or HF id)."
    )
    llm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="LLM weight dtype; 'auto' = bfloat16 on a CUDA GPU (float16 if it lacks bf16), "
        "else the dtype recorded in the manifest.",
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="torch device for the LLM, SASRec and ranking: auto (CUDA when present), cpu, cuda[:N].",
    )
    batch_window_ms: float = Field(
        default=5.0, ge=0, le=200, description="How long the micro-batcher collects concurrent cache misses."
    )
    max_batch_size: int = Field(default=16, ge=1, le=512, description="Most prompts in one LLM forward.")
    llm_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Budget for a user vector from the LLM; past it, SASRec (degraded).",
    )
    llm_shed_budget_s: float = Field(
        default=2.0,
        ge=0,
        le=300,
        description="Load shedding: when a cache miss's expected wait in the LLM queue (the batches ahead "
        "of it × their recent forward time) exceeds this, answer at once with the fallback (degraded) "
        "instead of queueing; keep it below llm_timeout_s. 0 = off.",
    )
    retrieval_top_n: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="Candidates taken from FAISS before exact rescoring and filters.",
    )
    default_model: Literal["auto", "llmsrec", "hybrid", "sasrec", "allmrec"] = Field(
        default="auto",
        description="Model of a recommend request that names none; 'auto' = the bundle's best by validation "
        "NDCG@10 on the 1+99 candidates (the manifest's default_model; see GET /v1/models). A model this "
        "service cannot serve refuses to start.",
    )
    allmrec_candidates: int = Field(
        default=20,
        ge=1,
        le=100,
        description="model=allmrec: SASRec candidates A-LLMRec re-ranks in one prompt (the paper's 20).",
    )
    index_exact_max_items: int = Field(
        default=200_000,
        ge=1,
        description="Catalogs up to this size use an exact inner-product index, larger ones HNSW.",
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        repr=False,
        description="Accepted X-API-Key values (comma-separated in the env); empty = /v1 routes are open.",
    )
    metrics_public: bool = Field(default=True, description="Serve /metrics without an API key.")
    max_history: int = Field(
        default=1_000, ge=1, le=10_000, description="Most events in a request's history (longer → 422)."
    )
    max_events: int = Field(
        default=1_000, ge=1, le=10_000, description="Most events in one events POST (more → 422)."
    )
    max_body_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=64 * 1024 * 1024,
        description="Largest accepted request body (larger → 413).",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, keys: list[str]) -> list[str]:
        if any(len(key) < 8 for key in keys):
            raise ValueError("every API key must have at least 8 characters")
        return keys

    def resolved_device(self) -> str:
        """'auto' → 'cuda' when torch sees a GPU, else 'cpu'."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
