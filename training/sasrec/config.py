"""The SASRec training config (a frozen dataclass whose fields are the CLI flags) and its validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from training.common.config import RunConfig
from training.common.errors import ConfigError
from training.common.flags import flag


@dataclass(frozen=True)
class SASRecTrainConfig(RunConfig):
    """Defaults: the LLM-SRec setting (DESIGN §2); the SASRec paper used hidden 50, max_len 200 on ML-1M.
    Device and progress: RunConfig (whose seed is re-declared for SASRec's default 42)."""

    hidden: int = flag(64, "Embedding / hidden size.")
    n_blocks: int = flag(2, "Transformer blocks.")
    n_heads: int = flag(1, "Attention heads.")
    max_len: int = flag(128, "Most recent items the model sees.")
    dropout: float = flag(0.1, "Dropout rate (embeddings, attention weights, feed-forward).")
    lr: float = flag(1e-3, "Adam learning rate.")
    beta1: float = flag(0.9, "Adam beta1.")
    beta2: float = flag(0.98, "Adam beta2.")
    l2: float = flag(0.0, "Weight of the L2 norm of the item table added to the loss (official l2_emb).")
    batch_size: int = flag(128, "Users per step.")
    epochs: int = flag(200, "Maximum epochs (one epoch = every training user once).")
    patience: int = flag(20, "Stop when the best validation NDCG@10 is this many epochs old.")
    eval_every: int = flag(2, "Validate every this many epochs (and after the last one).")
    eval_protocol: Literal["1+99", "1+19", "full"] = flag("1+99", "Validation candidates.")
    eval_max_users: int = flag(10_000, "Validation users (seeded subset when fewer than all).")
    eval_seed: int = flag(0, "Seed of the shared validation candidates.")
    seed: int = flag(42, "Seed of initialisation, dropout, user order and negatives.")
    time_budget_s: float = flag(
        0.0, "Stop after the first epoch that ends past this many seconds (0 = none)."
    )
    num_threads: int = flag(0, "CPU threads for torch (0 = torch's default).")


_POSITIVE = ("hidden", "n_blocks", "n_heads", "max_len", "batch_size", "epochs", "patience", "eval_every")


def check_config(config: SASRecTrainConfig) -> None:
    for name in _POSITIVE:
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if config.hidden % config.n_heads:
        raise ConfigError(f"--hidden ({config.hidden}) must be divisible by --n-heads ({config.n_heads})")
    if not 0.0 <= config.dropout < 1.0 or config.lr <= 0 or config.l2 < 0 or config.time_budget_s < 0:
        raise ConfigError("--dropout must be in [0, 1), --lr > 0, --l2 >= 0 and --time-budget-s >= 0")
    if not (0.0 <= config.beta1 < 1.0 and 0.0 <= config.beta2 < 1.0):
        raise ConfigError("--beta1 and --beta2 must be in [0, 1)")
    if config.eval_protocol not in ("1+99", "1+19", "full"):
        raise ConfigError(f"--eval-protocol must be 1+99, 1+19 or full, got {config.eval_protocol!r}")
