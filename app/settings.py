"""The service's one configuration object, read from LLMREC_* environment variables (or given directly),
nested by concern: Redis, the cache, the LLM stage, vLLM and the request limits are groups (each a frozen
dataclass owned by the module that uses it), whose variables keep their flat names (LLMREC_REDIS_URL →
redis.url, LLMREC_MAX_HISTORY → limits.max_history). Every other object receives plain values from it;
nothing here opens files or connections."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from annotated_types import Ge, Gt, Le, MinLen
from pydantic import Field, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from app.domain import RequestLimits
from app.llm_stage import LLMStageSettings
from app.redis_store import RedisSettings
from app.tiered_cache import CacheSettings

ENV_PREFIX = "LLMREC_"
# The name the `vllm serve` generate server serves the LLM under (its --served-model-name); docker-compose.yml
# and deploy/k8s/vllm.yaml start it with this name (tests/deploy checks they agree).
VLLM_SERVED_MODEL_NAME = "llmrec-llm"


@dataclass(frozen=True)
class VLLMSettings:
    """llm_backend=vllm only: env LLMREC_VLLM_<FIELD>; the keyword options of app.backends.vllm's factory."""

    # how Settings (pydantic) validates this group: no unknown field, the docstrings as descriptions
    __pydantic_config__: ClassVar[dict[str, object]] = {"extra": "forbid", "use_attribute_docstrings": True}

    gpu_memory_utilization: Annotated[float, Gt(0), Le(0.95)] = 0.4
    """Share of the GPU's total memory the in-process vLLM engine reserves; vLLM refuses to start when less is
    free. On a GPU shared with the `vllm serve` generate server (compose: 0.45), the two shares plus the
    transformers copy, FAISS and CUDA contexts must fit (see deploy/README.md)."""
    max_model_len: Annotated[int, Ge(16), Le(1_048_576)] | None = None
    """Context length of the vLLM engine; None = the model's (prompts are ~300-600 tokens)."""
    hf_scoring: bool = True
    """Keep a transformers copy of the LLM on the GPU for what the pooling engine cannot do (A-LLMRec
    candidate and genre scores); off = those answer degraded. Only when the bundle has an A-LLMRec part; costs
    one more copy of the LLM weights."""
    generate_url: str | None = None
    """Base URL of a `vllm serve --enable-prompt-embeds` server that writes the /v1/explain/genre sentence
    (e.g. http://vllm:8000); None = the transformers copy writes it."""
    generate_model: Annotated[str, MinLen(1)] = VLLM_SERVED_MODEL_NAME
    """Model name sent to that server: its --served-model-name (vLLM answers 404 to any other); the compose
    `vllm` service is started with this same variable."""


# Settings field of each group → what its fields' variable names start with after LLMREC_.
ENV_GROUPS = {"redis": "redis_", "cache": "", "llm_stage": "", "vllm": "vllm_", "limits": ""}


class Settings(BaseSettings):
    """Service settings; env var = LLMREC_ + the field name in capitals (e.g. LLMREC_DEVICE), for a group's
    field the group's prefix + its name (ENV_GROUPS: LLMREC_REDIS_URL, LLMREC_LLM_TIMEOUT_S)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    bundle: Path = Field(description="Bundle directory written by `llmrec export bundle` (manifest.json).")
    redis: RedisSettings = Field(default=RedisSettings(), description="Redis: LLMREC_REDIS_*.")
    cache: CacheSettings = Field(default=CacheSettings(), description="Cache sizes and TTLs.")
    llm_stage: LLMStageSettings = Field(
        default=LLMStageSettings(), description="Micro-batching, timeout and load shedding of LLM calls."
    )
    vllm: VLLMSettings = Field(default=VLLMSettings(), description="The vLLM backend: LLMREC_VLLM_*.")
    limits: RequestLimits = Field(default=RequestLimits(), description="Request sizes.")
    llm_backend: Literal["hf", "vllm"] = Field(
        default="hf",
        description="LLM engine: 'hf' = transformers in process (default), 'vllm' = in-process vLLM pooling "
        "engine (CUDA only, vllm installed; see app.backends.vllm for the supported versions).",
    )
    llm_path: str | None = Field(
        default=None, description="Override of the manifest's LLM location (local directory or HF id)."
    )
    llm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="LLM weight dtype; 'auto' = bfloat16 on a CUDA GPU that supports it, else float32 "
        "(models.runtime); float16 only when set.",
    )
    device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="torch device for the LLM, SASRec and ranking: auto (CUDA when present), cpu, cuda[:N].",
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
    allmrec_cold_candidates: int = Field(
        default=5,
        ge=0,
        le=100,
        description="model=allmrec: cold items (added by `llmrec export add-items`, no interactions) "
        "joined to SASRec's candidates, those whose text is nearest the history's; 0 = off.",
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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, GroupedEnvSource(settings_cls), dotenv_settings, file_secret_settings

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

    @classmethod
    def from_flat(cls, **values: Any) -> Settings:
        """Settings from the variables' flat names, as the environment gives them (redis_url=...,
        max_history=...; see nest); the environment fills what is not given, as always."""
        return cls(**nest(values))

    def env_view(self) -> dict[str, Any]:
        """Every variable's value: {'LLMREC_REDIS_URL': ..., 'LLMREC_MAX_HISTORY': ..., ...}."""
        return {
            env: getattr(getattr(self, group), name) if group else getattr(self, name)
            for env, (group, name) in env_names().items()
        }


def env_names() -> dict[str, tuple[str | None, str]]:
    """Every LLMREC_* variable Settings reads → (its group or None, the field's name)."""
    out: dict[str, tuple[str | None, str]] = {}
    for field, info in Settings.model_fields.items():
        if field in ENV_GROUPS:
            assert isinstance(info.annotation, type)
            for sub in dataclasses.fields(info.annotation):
                out[f"{ENV_PREFIX}{ENV_GROUPS[field]}{sub.name}".upper()] = (field, sub.name)
        else:
            out[f"{ENV_PREFIX}{field}".upper()] = (None, field)
    return out


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat names (an LLMREC_* variable's name without the prefix, in lower case) → Settings' shape:
    {'redis_url': u, 'max_history': 5} → {'redis': {'url': u}, 'limits': {'max_history': 5}}. Other names
    pass through unchanged (and Settings refuses those it does not have)."""
    places = {env.removeprefix(ENV_PREFIX).lower(): place for env, place in env_names().items()}
    out: dict[str, Any] = {}
    for key, value in flat.items():
        group, name = places.get(key, (None, key))
        if group is None:
            out[name] = value
        else:
            out.setdefault(group, {})[name] = value
    return out


def env_defaults() -> dict[str, Any]:
    """Every LLMREC_* variable's default (the required bundle has none)."""
    defaults: dict[str, Any] = {}
    for env, (group, name) in env_names().items():
        info = Settings.model_fields[group or name]
        if group is not None:
            defaults[env] = getattr(info.default, name)
        elif not info.is_required():
            defaults[env] = info.get_default(call_default_factory=True)
    return defaults


class GroupedEnvSource(EnvSettingsSource):
    """The environment as Settings reads it: plain fields by their own names, each group's fields by their
    flat names (ENV_GROUPS), e.g. LLMREC_REDIS_URL → redis.url."""

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        for env, (group, name) in env_names().items():
            value = self.env_vars.get(env if self.case_sensitive else env.lower())
            if group is not None and value is not None:
                data.setdefault(group, {})[name] = value
        return data
