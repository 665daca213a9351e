"""A-LLMRec checkpoint directories: stage 1 (autoencoders + item/text tables + cold mask) and stage 2
(F_U, F_I + the LLM record and prompt), written atomically (weights, then config.json last) and read with
clear errors; `load_allmrec_encoder` rebuilds the whole inference path from a stage-2 directory.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from models.allmrec import ALLMRecStage1, ALLMRecStage2, Stage1Config, Stage2Config
from models.allmrec_encoder import ALLMRecEncoder
from models.prompts import ALLMRecPromptConfig
from models.runtime import LoadedLLM
from training.common.errors import CheckpointError
from training.common.llm import LLM_ALIASES, load_llm
from training.data.dataset import PreparedData
from training.sasrec.checkpoint import load_sasrec

CONFIG_FILE = "config.json"
STAGE1_FILE = "stage1.safetensors"
STAGE2_FILE = "stage2.safetensors"
FORMAT_VERSION = 1


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def save_module(out: Path, weights_file: str, module: nn.Module, config: dict[str, Any]) -> None:
    """Weights as safetensors, then config.json: a complete config marks a complete checkpoint."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    atomic_write(out / weights_file, lambda p: save_file(state, str(p)))
    text = json.dumps(config | {"format_version": FORMAT_VERSION}, indent=2, default=str)
    atomic_write(out / CONFIG_FILE, lambda p: p.write_text(text))


def read_config(ckpt_dir: Path, what: str) -> dict[str, Any]:
    path = Path(ckpt_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; is {ckpt_dir} an A-LLMRec {what} checkpoint?")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path} is not valid JSON: {err}") from None
    if config.get("format_version") != FORMAT_VERSION or config.get("stage") != what:
        raise CheckpointError(
            f"{path}: expected an A-LLMRec {what} checkpoint (format {FORMAT_VERSION}), "
            f"found stage {config.get('stage')!r}, format {config.get('format_version')!r}"
        )
    return config


def _dataclass(cls: type, value: Any, path: Path, key: str) -> Any:
    known = {f.name for f in fields(cls)}
    if not isinstance(value, dict) or not known.issuperset(value):
        raise CheckpointError(f"{path}: field {key!r} must hold {cls.__name__} fields, got {value!r}")
    try:
        return cls(**value)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: field {key!r}: {err}") from None


def _load_weights(module: nn.Module, path: Path) -> None:
    try:
        module.load_state_dict(load_file(path))
    except (FileNotFoundError, SafetensorError, RuntimeError, OSError) as err:
        raise CheckpointError(f"{path}: cannot load the weights: {err}") from None


def load_stage1(ckpt_dir: Path, device: str = "cpu") -> tuple[ALLMRecStage1, dict[str, Any]]:
    """Stage-1 module (eval mode, frozen) and its config.json."""
    ckpt_dir = Path(ckpt_dir)
    config = read_config(ckpt_dir, "stage1")
    module = ALLMRecStage1(_dataclass(Stage1Config, config.get("model"), ckpt_dir / CONFIG_FILE, "model"))
    _load_weights(module, ckpt_dir / STAGE1_FILE)
    return module.to(device).eval().requires_grad_(False), config


def load_stage2(ckpt_dir: Path, device: str = "cpu") -> tuple[ALLMRecStage2, dict[str, Any]]:
    """Stage-2 module (eval mode) and its config.json."""
    ckpt_dir = Path(ckpt_dir)
    config = read_config(ckpt_dir, "stage2")
    module = ALLMRecStage2(_dataclass(Stage2Config, config.get("model"), ckpt_dir / CONFIG_FILE, "model"))
    _load_weights(module, ckpt_dir / STAGE2_FILE)
    return module.to(device).eval(), config


def check_dataset(config: dict[str, Any], data: PreparedData, where: Path) -> None:
    if config.get("dataset") != data.name or config.get("n_items") != data.n_items:
        raise CheckpointError(
            f"{where} was trained on {config.get('dataset')!r} with {config.get('n_items')} items; "
            f"the data is {data.name!r} with {data.n_items}"
        )


def load_checkpoint_llm(spec: dict[str, Any], device: str, dtype: str | None = None) -> LoadedLLM:
    """The LLM a stage-2 checkpoint was trained with; its special-token ids must match the record."""
    name = (
        spec["id"] if spec["id"] in LLM_ALIASES or not Path(spec.get("path", "")).exists() else spec["path"]
    )
    llm = load_llm(name, device=device, dtype=dtype or spec.get("dtype", "auto"))
    if llm.special_tokens != spec["special_tokens"]:
        raise CheckpointError(
            f"LLM {name!r} gives special tokens {llm.special_tokens}, the checkpoint recorded "
            f"{spec['special_tokens']}: not the LLM/tokenizer it was trained with"
        )
    return llm


def build_encoder(
    llm: LoadedLLM,
    sasrec_dir: Path,
    stage1: ALLMRecStage1,
    stage2: ALLMRecStage2,
    data: PreparedData,
    prompt: ALLMRecPromptConfig,
) -> ALLMRecEncoder:
    """The encoder over the dataset's catalog, with SASRec (frozen, eval mode) on stage 2's device."""
    device = str(next(stage2.parameters()).device)
    sasrec = load_sasrec(Path(sasrec_dir), device=device).requires_grad_(False)
    titles = [item.title for item in data.items]
    return ALLMRecEncoder(
        llm.model, llm.tokenizer, sasrec, stage1, stage2, titles, llm.special_tokens, prompt
    )


def load_allmrec_encoder(
    stage2_dir: Path, data: PreparedData, device: str = "cpu", llm: LoadedLLM | None = None
) -> tuple[ALLMRecEncoder, dict[str, Any]]:
    """Stage-2 dir → (encoder, stage-2 config): loads its stage 1, SASRec and LLM (unless `llm` is given)."""
    stage2, config = load_stage2(stage2_dir, device)
    check_dataset(config, data, Path(stage2_dir))
    stage1, _ = load_stage1(Path(config["stage1_dir"]), device)
    if stage1.config.n_items != data.n_items:
        raise CheckpointError(
            f"{config['stage1_dir']}: stage 1 has {stage1.config.n_items} items, data {data.n_items}"
        )
    prompt = _dataclass(ALLMRecPromptConfig, config.get("prompt"), Path(stage2_dir) / CONFIG_FILE, "prompt")
    llm = llm or load_checkpoint_llm(config["llm"], device)
    if llm.spec["hidden_size"] != stage2.config.llm_hidden:
        raise CheckpointError(
            f"LLM hidden size {llm.spec['hidden_size']} != stage 2's {stage2.config.llm_hidden}"
        )
    return build_encoder(
        llm, Path(config["sasrec_dir"]), stage1, stage2.requires_grad_(False), data, prompt
    ), config


def plot_curves(history: list[dict[str, Any]], keys: list[str], path: Path, x: str = "epoch") -> None:
    """training_curve.png: the given components per epoch (or step), one line each."""
    from matplotlib.figure import Figure  # Agg canvas; no pyplot global state

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for key in keys:
        if any(key in h for h in history):
            ax.plot([h[x] for h in history if key in h], [h[key] for h in history if key in h], label=key)
    ax.set_xlabel(x)
    ax.set_yscale("log")
    ax.legend()
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=100)
    os.replace(tmp, path)


def write_history(out: Path, history: list[dict[str, Any]]) -> None:
    (out / "history.json").write_text(json.dumps(history, indent=2))
