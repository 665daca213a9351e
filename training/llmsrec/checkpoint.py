"""LLM-SRec checkpoint directories: layout, atomic write, resume state of the paper recipe, load with clear
errors, and the LLM a checkpoint was trained with. The scorer over a checkpoint: training/llmsrec/scorer.py.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from models.llmsrec import LLMSRec, LLMSRecConfig
from models.prompts import PromptConfig
from models.runtime import LoadedLLM
from training.common.errors import CheckpointError
from training.common.llm import LLM_ALIASES, load_llm

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
HEADS_FILE = "heads.safetensors"
ITEM_VECTORS_FILE = "item_vectors.npy"
ITEM_IDS_FILE = "item_ids.npy"
STATE_FILE = "train_state.pt"  # resume state: heads, optimizer, progress
CHECKPOINT_FORMAT = 1


@dataclass
class LLMSRecCheckpoint:
    """What a checkpoint directory holds, minus the LLM (loaded separately from `llm_spec`)."""

    config: dict[str, Any]  # the whole config.json
    heads: LLMSRec
    item_table: np.ndarray  # (n_items + 1, user_dim) float32
    prompt: PromptConfig

    @property
    def llm_spec(self) -> dict[str, Any]:
        return self.config["llm"]

    @property
    def variant(self) -> str:
        return self.config["variant"]


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def _save_npy(array: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as fh:
            np.save(fh, array)

    return write


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def checkpoint_config(
    dataset: str,
    llm_spec: dict[str, Any],
    heads: LLMSRec,
    prompt: PromptConfig,
    variant: str,
    train: dict[str, Any],
    sasrec_dir: Path,
    best_epoch: int | None,
    valid: dict[str, Any],
    hybrid: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """config.json: everything needed to rebuild the encoder and to write a bundle manifest. `hybrid`:
    {weight, scale_llmsrec, scale_sasrec, valid} of the blend with SASRec chosen on validation (the export
    then adds a `hybrid` model part); None leaves the key out."""
    llm = llm_spec | {
        "prompt_template_version": prompt.version,
        "max_title_tokens": prompt.max_title_tokens,
        "history_len": prompt.history_len,
    }
    config: dict[str, Any] = {
        "format_version": CHECKPOINT_FORMAT,
        "model": dataclasses.asdict(heads.config),
        "variant": variant,
        "train": train,
        "llm": llm,
        "prompt": dataclasses.asdict(prompt),
        "dataset": dataset,
        "n_items": heads.config.n_items,
        "sasrec_dir": str(Path(sasrec_dir).resolve()),
        "best_epoch": best_epoch,
        "valid": valid,
        "files": {"heads": HEADS_FILE, "item_vectors": ITEM_VECTORS_FILE, "item_ids": ITEM_IDS_FILE},
    }
    return config if hybrid is None else config | {"hybrid": dict(hybrid)}


def save_llmsrec(out: Path, heads: LLMSRec, item_table: np.ndarray, config: dict[str, Any]) -> None:
    """Heads, item table and ids, then config.json last: a complete config marks a complete checkpoint."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in heads.state_dict().items()}
    _atomic_write(out / HEADS_FILE, lambda p: save_file(state, str(p)))
    _atomic_write(out / ITEM_VECTORS_FILE, _save_npy(item_table.astype(np.float32)))
    _atomic_write(out / ITEM_IDS_FILE, _save_npy(np.arange(len(item_table), dtype=np.int64)))
    _atomic_write(out / CONFIG_FILE, lambda p: _write_text(p, json.dumps(config, indent=2)))


@dataclass
class TrainState:
    """Progress that a resumed run continues from (saved with the heads and optimizer state)."""

    epoch: int = 0  # epochs completed
    best_hr: float = -1.0
    best_epoch: int | None = None
    best_valid: dict[str, Any] = field(default_factory=dict)
    bad_epochs: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def save_state(
    out: Path, heads: LLMSRec, optimizer: torch.optim.Optimizer, state: TrainState, sig: dict
) -> None:
    payload = {
        "heads": heads.state_dict(),
        "optimizer": optimizer.state_dict(),
        "progress": json.dumps({"state": dataclasses.asdict(state), "signature": sig}),
    }
    tmp = out / f".{STATE_FILE}.tmp-{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, out / STATE_FILE)


def load_state(out: Path, heads: LLMSRec, optimizer: torch.optim.Optimizer, sig: dict) -> TrainState:
    """Restore heads, optimizer and progress from OUT/train_state.pt; a fresh state when there is none."""
    path = out / STATE_FILE
    if not path.is_file():
        log.warning("--resume: %s not found, starting from epoch 1", path)
        return TrainState()
    try:
        payload = torch.load(path, map_location=heads.cf_item_emb.device, weights_only=True)
        progress = json.loads(payload["progress"])
    except (OSError, RuntimeError, KeyError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: cannot resume from it: {err}") from err
    if progress["signature"] != sig:
        raise CheckpointError(f"{path} was written by another run: {progress['signature']} != {sig}")
    heads.load_state_dict(payload["heads"])
    optimizer.load_state_dict(payload["optimizer"])
    log.info("resuming after epoch %d", progress["state"]["epoch"])
    return TrainState(**progress["state"])


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing; is {path.parent} an LLM-SRec checkpoint (llmrec train llmsrec)?"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from err


def _model_config(config: dict[str, Any], path: Path) -> LLMSRecConfig:
    known = {f.name for f in fields(LLMSRecConfig)}
    model = config.get("model")
    if not isinstance(model, dict) or not known.issuperset(model) or "n_items" not in model:
        raise CheckpointError(f"{path}: field 'model' must hold LLMSRecConfig fields, got {model!r}")
    return LLMSRecConfig(**model)


def load_llmsrec(ckpt_dir: Path, device: str = "cpu") -> LLMSRecCheckpoint:
    """Read config.json, heads.safetensors and item_vectors.npy; heads in eval mode on `device`."""
    ckpt_dir = Path(ckpt_dir)
    config = _read_json(ckpt_dir / CONFIG_FILE)
    if config.get("format_version") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{ckpt_dir / CONFIG_FILE}: format_version {config.get('format_version')!r} != 1"
        )
    for key in ("llm", "prompt", "variant", "dataset"):
        if key not in config:
            raise CheckpointError(f"{ckpt_dir / CONFIG_FILE}: field {key!r} is missing")
    heads = LLMSRec(_model_config(config, ckpt_dir / CONFIG_FILE))
    try:
        state = load_file(ckpt_dir / HEADS_FILE)
        heads.load_state_dict(state)
    except (FileNotFoundError, SafetensorError, RuntimeError) as err:
        raise CheckpointError(f"{ckpt_dir / HEADS_FILE}: cannot load the LLM-SRec heads: {err}") from err
    table_path = ckpt_dir / ITEM_VECTORS_FILE
    try:
        table = np.load(table_path)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{table_path}: cannot read the item table: {err}") from err
    expected = (heads.config.n_items + 1, heads.config.user_dim)
    if table.shape != expected:
        raise CheckpointError(f"{table_path}: shape {table.shape} != {expected} from {CONFIG_FILE}")
    prompt = PromptConfig(**config["prompt"])
    return LLMSRecCheckpoint(config, heads.to(device).eval(), table.astype(np.float32), prompt)


def load_checkpoint_llm(ckpt: LLMSRecCheckpoint, device: str, dtype: str | None = None) -> LoadedLLM:
    """Load the LLM the checkpoint was trained with, by default in the dtype its item table was computed
    in (user and item vectors then match); its special-token ids must match the record."""
    spec = ckpt.llm_spec
    name = spec["id"] if spec["id"] in LLM_ALIASES or not Path(spec["path"]).exists() else spec["path"]
    llm = load_llm(name, device=device, dtype=dtype or spec.get("dtype", "auto"))
    if llm.special_tokens != spec["special_tokens"]:
        raise CheckpointError(
            f"LLM {name!r} gives special tokens {llm.special_tokens}, the checkpoint recorded "
            f"{spec['special_tokens']}: not the LLM/tokenizer it was trained with"
        )
    if llm.spec["hidden_size"] != ckpt.heads.config.llm_hidden:
        raise CheckpointError(
            f"LLM {name!r} hidden size {llm.spec['hidden_size']} != {ckpt.heads.config.llm_hidden}"
        )
    return llm
