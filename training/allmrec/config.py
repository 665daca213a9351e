"""The A-LLMRec training configs (frozen dataclasses whose fields are the CLI flags): stage 1, stage 2 and
the genre prompt, with their validation."""

from __future__ import annotations

from dataclasses import dataclass

from models.allmrec import Stage1Weights
from models.allmrec_scoring import SCORE_MODES
from models.prompts import ALLMREC_TEMPLATE_VERSIONS
from training.common.config import DeviceConfig, LLMRunConfig, RunConfig
from training.common.errors import ConfigError
from training.common.flags import flag


@dataclass(frozen=True)
class Stage1TrainConfig(RunConfig):
    """Defaults from the paper / official code (lr 1e-4, batch 32, 10 epochs, latent 128). Seed, device and
    progress: RunConfig."""

    epochs: int = flag(10, "Epochs (one epoch = every training user once, all positions).")
    batch_size: int = flag(32, "Users per step (each contributes every next-item position).")
    lr: float = flag(1e-4, "Adam learning rate.")
    latent: int = flag(128, "Size of the shared latent space.")
    w_rec: float = flag(1.0, "Weight of the recommendation BCE.")
    w_matching: float = flag(1.0, "Weight of the matching MSE (item latent vs text latent).")
    w_item_recon: float = flag(0.5, "Weight of the item reconstruction MSE.")
    w_text_recon: float = flag(0.2, "Weight of the text reconstruction MSE.")
    finetune_text_encoder: bool = flag(False, "Also train MiniLM's last transformer layer (slow on CPU).")

    def weights(self) -> Stage1Weights:
        return Stage1Weights(self.w_rec, self.w_matching, self.w_item_recon, self.w_text_recon)


def check_stage1(config: Stage1TrainConfig) -> None:
    for name in ("epochs", "batch_size", "latent"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    weights = (config.w_rec, config.w_matching, config.w_item_recon, config.w_text_recon)
    if config.lr <= 0 or min(weights) < 0:
        raise ConfigError("--lr must be > 0 and the loss weights >= 0")


@dataclass(frozen=True)
class Stage2TrainConfig(LLMRunConfig):
    """Seed, device, progress, llm and dtype: LLMRunConfig."""

    epochs: int = flag(5, "Maximum epochs.")
    batch_size: int = flag(4, "Prompts per optimisation step.")
    lr: float = flag(1e-4, "Adam learning rate.")
    n_candidates: int = flag(
        10, "Candidates in each training prompt (target + n-1 negatives; the paper lists 20: ~1.4x slower)."
    )
    history_len: int = flag(10, "History items shown in the prompt (the most recent).")
    max_title_tokens: int = flag(24, "Titles are cut to this many tokens.")
    template: str = flag(
        "lead", "Prompt: lead (ours: real tokens before the user token) | paper (the user token first)."
    )
    max_users: int = flag(0, "Train on a seeded subset of this many users (0 = all).")
    eval_max_users: int = flag(100, "Validation users per epoch (1+19, likelihood); 0 = no validation.")
    eval_seed: int = flag(0, "Seed of the shared validation candidates.")
    eval_batch_size: int = flag(4, "Prompts per forward at validation.")
    time_budget_s: float = flag(0.0, "Stop training once this many seconds have passed (0 = none).")
    rank_loss_weight: float = flag(
        0.0,
        "Ours: weight of a listwise loss over the candidates' title likelihoods (0 = the paper's LM loss).",
    )
    rank_score: str = flag(
        "sum",
        "Ours: the score the ranking loss and each epoch's validation rank by: sum (the paper's) | mean | "
        "pmi | pmi-mean (the PMI modes subtract each title's likelihood under the prior prompt, one more "
        "forward without gradient).",
    )
    init: str = flag("", "Start from this stage-2 checkpoint's weights (same prompt template); '' = fresh.")
    calibration_users: int = flag(
        300, "Validation users to choose the candidate scoring on (0 = the paper's summed likelihood)."
    )


def check_stage2(config: Stage2TrainConfig) -> None:
    for name in ("epochs", "batch_size", "history_len", "max_title_tokens", "eval_batch_size"):
        if getattr(config, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if config.n_candidates < 2 or config.lr <= 0 or config.time_budget_s < 0:
        raise ConfigError("--n-candidates must be >= 2, --lr > 0 and --time-budget-s >= 0")
    if config.rank_loss_weight < 0:
        raise ConfigError(f"--rank-loss-weight must be >= 0, got {config.rank_loss_weight}")
    if config.rank_score not in SCORE_MODES:
        raise ConfigError(f"--rank-score must be one of {', '.join(SCORE_MODES)}, got {config.rank_score!r}")
    if config.calibration_users < 0:
        raise ConfigError(f"--calibration-users must be >= 0, got {config.calibration_users}")
    if config.template not in ALLMREC_TEMPLATE_VERSIONS:
        raise ConfigError(f"--template must be one of {', '.join(ALLMREC_TEMPLATE_VERSIONS)}")


@dataclass(frozen=True)
class GenreTrainConfig(LLMRunConfig):
    """Seed, device, progress and dtype: LLMRunConfig (whose llm is re-declared for its help)."""

    llm: str = flag("smollm2", "LLM (alias, path or HF id) when no --stage2 is given; else the stage-2 one.")
    epochs: int = flag(1, "Epochs (one example per training user).")
    batch_size: int = flag(8, "Users per optimisation step.")
    lr: float = flag(1e-4, "Adam learning rate of F_U and F_I.")
    history_len: int = flag(10, "Items shown in the prompt (the most recent).")
    max_title_tokens: int = flag(24, "Titles are cut to this many tokens.")
    max_users: int = flag(0, "Train on a seeded subset of this many users (0 = all).")
    valid_users: int = flag(200, "Validation users per epoch (seeded subset; 0 = all).")

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.history_len < 1 or self.lr <= 0:
            raise ConfigError("epochs, batch_size and history_len must be >= 1 and lr > 0")


@dataclass(frozen=True)
class CalibrateConfig(DeviceConfig):
    users: int = flag(300, "Validation users (a seeded subset) to choose the candidate scoring on.")
    batch_size: int = flag(4, "Prompts per forward.")
    cold: str = flag(
        "auto",
        "Cold candidates' SASRec side: auto = chosen on validation, neutral, or a fixed offset (0 … -4, "
        "steps of 0.5) for their text-predicted score.",
    )

    def __post_init__(self) -> None:
        if self.users < 1 or self.batch_size < 1:
            raise ConfigError("--users and --batch-size must be >= 1")
