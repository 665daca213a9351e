"""The LLM-SRec training config (a frozen dataclass whose fields are the CLI flags; both recipes) and its
validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from models.llmsrec import LossWeights
from training.common.config import LLMRunConfig
from training.common.errors import ConfigError
from training.common.flags import flag


@dataclass(frozen=True)
class LLMSRecTrainConfig(LLMRunConfig):
    """Seed, device, progress, llm and dtype: LLMRunConfig."""

    variant: Literal["llmsrec", "llm-only"] = flag("llmsrec", "llm-only = no distillation, no uniformity.")
    recipe: Literal["cached", "paper"] = flag(
        "cached",
        "cached = llmrec's own recipe (not the paper's): input side frozen, the LLM's marker hidden states "
        "cached once, heads trained on them for many epochs; paper = the paper's end-to-end training.",
    )
    template: Literal["paper", "short"] = flag(
        "paper", "User prompt: the paper's (Item No.k, Time: date, title) or our short one (titles only)."
    )
    epochs: int = flag(10, "Maximum epochs.")
    batch_size: int = flag(20, "Users per optimisation step.")
    lr: float = flag(1e-4, "Adam learning rate.")
    patience: int = flag(5, "Stop after this many epochs without a better validation HR@10.")
    n_negatives: int = flag(3, "Negative item prompts per user (never the positive or a history item).")
    w_retrieval: float = flag(1.0, "Weight of the retrieval cross-entropy.")
    w_distill: float = flag(1.0, "Weight of the MSE distillation to SASRec (0 for llm-only).")
    w_uniformity: float = flag(1.0, "Weight of the uniformity terms (0 for llm-only).")
    history_len: int = flag(10, "Items shown in the user prompt (the most recent).")
    max_title_tokens: int = flag(24, "Titles are cut to this many tokens.")
    max_users: int = flag(0, "Train on a seeded subset of this many users (0 = all).")
    eval_max_users: int = flag(10_000, "Validation users per epoch (seeded subset when fewer than all).")
    eval_seed: int = flag(0, "Seed of the shared validation candidates.")
    item_batch_size: int = flag(64, "Item prompts per forward when building the item table.")
    user_batch_size: int = flag(16, "User prompts per forward at evaluation.")
    # --- the cached recipe only ---
    prefixes_per_user: int = flag(
        16,
        "cached: training prefixes per user (last position, then stride; 16 measured best on ml-100k, "
        "4 is ~3x cheaper); cached per prefix rank, so a later run with more computes only the new ranks.",
    )
    prefix_stride: int = flag(1, "cached: positions between a user's successive training prefixes.")
    e2e_steps: int = flag(0, "cached: steps of end-to-end training before the input side is frozen.")
    head_epochs: int = flag(200, "cached: maximum epochs of head training on the cache.")
    head_lr: float = flag(1e-3, "cached: Adam learning rate of the heads.")
    head_batch_size: int = flag(256, "cached: prefixes per head-training step.")
    head_patience: int = flag(10, "cached: stop after this many epochs without a better valid NDCG@10.")
    input_dropout: float = flag(0.1, "cached: dropout on the cached hidden states while training.")
    weight_decay: float = flag(0.0, "cached: Adam weight decay of the heads.")
    w_score_distill: float = flag(
        1.0,
        "cached: weight of KL(SASRec's catalogue softmax || LLM-SRec's) (ours; 0 = the paper's loss; "
        "ignored for llm-only).",
    )
    score_distill_temperature: float = flag(
        1.0, "cached: temperature of both softmaxes in the score distillation (loss times its square)."
    )
    cache_batch_size: int = flag(16, "cached: prompts per forward while caching hidden states.")
    cache_dir: str = flag(
        "", "cached: hidden-state cache, shared by runs with the same input side (default OUT/cache)."
    )
    resume: bool = flag(False, "Continue from OUT/train_state.pt (optimizer state and epoch).")

    def score_distill_weight(self) -> float:
        """The score distillation's weight: 0 for llm-only, which learns without SASRec."""
        return 0.0 if self.variant == "llm-only" else self.w_score_distill

    def loss_weights(self) -> LossWeights:
        if self.variant == "llm-only":
            return LossWeights(self.w_retrieval, 0.0, 0.0)
        return LossWeights(self.w_retrieval, self.w_distill, self.w_uniformity)


def check_config(config: LLMSRecTrainConfig) -> None:
    positive = (
        *("epochs", "batch_size", "n_negatives", "history_len", "max_title_tokens", "item_batch_size"),
        *("prefixes_per_user", "prefix_stride", "head_epochs", "head_batch_size", "head_patience"),
        "cache_batch_size",
    )
    for name in positive:
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if config.lr <= 0 or min(config.w_retrieval, config.w_distill, config.w_uniformity) < 0:
        raise ConfigError("--lr must be > 0 and the loss weights >= 0")
    if config.score_distill_temperature <= 0:
        raise ConfigError(f"--score-distill-temperature must be > 0, got {config.score_distill_temperature}")
    if config.w_score_distill < 0:
        raise ConfigError(f"--w-score-distill must be >= 0, got {config.w_score_distill}")
    if not 0.0 <= config.input_dropout < 1.0 or config.head_lr <= 0 or config.e2e_steps < 0:
        raise ConfigError("--input-dropout must be in [0, 1), --head-lr > 0 and --e2e-steps >= 0")
    if config.recipe not in ("cached", "paper") or config.template not in ("paper", "short"):
        raise ConfigError(f"--recipe {config.recipe!r} or --template {config.template!r} is not known")
    if config.variant not in ("llmsrec", "llm-only"):
        raise ConfigError(f"--variant must be llmsrec or llm-only, got {config.variant!r}")
