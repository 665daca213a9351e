"""The parts every training config shares, as frozen dataclass bases whose fields are CLI flags: the device,
the run (seed, progress bars) and the frozen LLM (llm, dtype). A model's config inherits one of them, so its
fields stay flat (`config.seed`, one `--seed` flag, a flat `asdict` in config.json) and it may re-declare a
field only to change its default or help. Knows nothing about models."""

from __future__ import annotations

from dataclasses import dataclass

from training.common.flags import flag


@dataclass(frozen=True)
class DeviceConfig:
    device: str = flag("auto", "auto | cpu | cuda[:N].")


@dataclass(frozen=True)
class RunConfig(DeviceConfig):
    seed: int = flag(0, "Seed of initialisation, user subset and order, and negatives.")
    progress: bool = flag(True, "Show progress bars.")


@dataclass(frozen=True)
class LLMRunConfig(RunConfig):
    """A run with a frozen LLM (training.common.llm.load_llm reads `llm` and `dtype`)."""

    llm: str = flag("smollm2", "LLM: alias (smollm2), local path or HF id.")
    dtype: str = flag(
        "auto", "LLM dtype: auto (bf16 on CUDA if supported, else float32) | float32 | bfloat16."
    )
